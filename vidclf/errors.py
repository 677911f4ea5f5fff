"""The one base class of errors a user can act on; the CLI prints them as one line."""


class VidclfError(Exception):
    """An input, file or setting cannot be used; the message names it and says what to do."""
