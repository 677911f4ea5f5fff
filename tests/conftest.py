"""Shared test set-up: make tests/indexed.py importable as a helper module."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test caches into its own folder, never the user's ~/.cache/vidclf."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("VIDCLF_CACHE_DIR", str(cache))
    return cache
