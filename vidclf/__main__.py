"""``python -m vidclf``: the same Typer app as the ``vidclf`` console script."""

from vidclf.cli import app

app(prog_name="vidclf")
