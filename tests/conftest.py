"""Shared test set-up: make tests/indexed.py importable as a helper module."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
