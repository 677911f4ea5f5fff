"""Progress bars on stderr, drawn only when stderr is a terminal (never in logs or pipes)."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, **options: object) -> tqdm:
    return tqdm(iterable, disable=not sys.stderr.isatty(), leave=False, **options)
