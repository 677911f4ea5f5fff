"""Progress bars on stderr, drawn only when stderr is a terminal (never in logs or pipes), and
under torchrun by rank 0 only."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, **options: object) -> tqdm:
    return tqdm(iterable, disable=not sys.stderr.isatty() or os.environ.get("RANK", "0") != "0", leave=False, **options)
