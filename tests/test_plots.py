"""The PNGs vidclf draws: readable files, the right layout, the exact pixels the model sees."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidclf import plots
from vidclf.errors import VidclfError
from vidclf.plots import PlotDependencyError, confusion_plot, contact_sheet, training_curves


def _flat_frames(count: int, height: int, width: int) -> np.ndarray:
    """One saturated, distinct RGB colour per frame, far from the sheet's greys and text."""
    frames = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        frames[i] = (200, 20 + 13 * i, 90 + 7 * i)  # R stays high, G/B differ per frame
    return frames


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cv2 cannot read {path}"
    return image


def _bbox(image: np.ndarray, bgr: tuple[int, int, int]) -> tuple[int, int, int, int, int]:
    """(top, left, height, width, pixel count) of the pixels exactly equal to bgr."""
    ys, xs = np.nonzero(np.all(image == np.array(bgr, np.uint8), axis=-1))
    assert ys.size, f"colour {bgr} not found"
    return ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1, ys.size


def test_contact_sheet_layout_and_exact_pixels(tmp_path: Path) -> None:
    frames = _flat_frames(10, 30, 40)  # non-square, so a swapped H/W would show
    out = contact_sheet(frames, list(range(0, 50, 5)), [i / 25 for i in range(0, 50, 5)],
                        tmp_path / "nested" / "sheet.png", columns=4)
    assert out == tmp_path / "nested" / "sheet.png"
    image = _read(out)

    scale = math.ceil(plots.MIN_TILE_WIDTH / 40)
    tile_h, tile_w = 30 * scale, 40 * scale
    assert tile_w >= plots.MIN_TILE_WIDTH
    tops, lefts = [], []
    for i, rgb in enumerate(frames[:, 0, 0]):
        top, left, h, w, n = _bbox(image, tuple(int(v) for v in rgb[::-1]))  # PNG is BGR
        # The whole tile, untouched by captions, is the upscaled frame's flat colour.
        assert (h, w, n) == (tile_h, tile_w, tile_h * tile_w), i
        tops.append(top)
        lefts.append(left)
    # Row-major grid of 4 columns: 10 frames -> 3 rows (4, 4, 2).
    assert len(set(tops)) == 3 and len(set(lefts)) == 4
    for i in range(10):
        assert tops[i] == sorted(set(tops))[i // 4]
        assert lefts[i] == sorted(set(lefts))[i % 4]
    # The sheet is 4 tiles wide and 3 tiles (plus captions) tall, with no spare row or column.
    assert 4 * tile_w < image.shape[1] < 4 * tile_w + 5 * 20
    row_step = tops[4] - tops[0]
    assert row_step > tile_h  # room for the caption strip
    assert image.shape[0] == pytest.approx(3 * row_step, abs=20)
    assert image.shape[0] > tops[8] + tile_h


def test_contact_sheet_upscales_real_content_with_nearest_neighbour(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 20, 28, 3), dtype=np.uint8)
    image = _read(contact_sheet(frames, [0, 1, 2], None, tmp_path / "s.png", columns=3))
    scale = math.ceil(plots.MIN_TILE_WIDTH / 28)
    expected = np.repeat(np.repeat(frames[1, :, :, ::-1], scale, 0), scale, 1)
    # Locate tile 1 by its top-left pixel block and compare the whole region.
    hits = np.argwhere(np.all(image == expected[0, 0], axis=-1))
    found = [(y, x) for y, x in hits
             if np.array_equal(image[y:y + expected.shape[0], x:x + expected.shape[1]], expected)]
    assert len(found) == 1


def test_contact_sheet_title_adds_a_bar_on_top(tmp_path: Path) -> None:
    frames = _flat_frames(3, 112, 112)
    plain = _read(contact_sheet(frames, [0, 1, 2], [0.0, 0.5, 1.0], tmp_path / "a.png"))
    titled = _read(contact_sheet(frames, [0, 1, 2], [0.0, 0.5, 1.0], tmp_path / "b.png",
                                 title="clip.mp4 — 3 frames " * 10))  # long, and not ASCII
    assert titled.shape[1] == plain.shape[1]
    assert titled.shape[0] > plain.shape[0]
    colour = tuple(int(v) for v in frames[0, 0, 0, ::-1])
    assert _bbox(titled, colour)[0] > _bbox(plain, colour)[0]


@pytest.mark.parametrize("bad", [
    dict(frames=np.zeros((2, 8, 8), np.uint8)),
    dict(frames=np.zeros((2, 8, 8, 3), np.float32)),
    dict(frames=np.zeros((0, 8, 8, 3), np.uint8), indices=[]),
    dict(indices=[0]),
    dict(timestamps_s=[0.0]),
    dict(columns=0),
])
def test_contact_sheet_rejects_inconsistent_input(tmp_path: Path, bad: dict) -> None:
    args = dict(frames=np.zeros((2, 8, 8, 3), np.uint8), indices=[0, 1], timestamps_s=[0.0, 0.1],
                out=tmp_path / "x.png") | bad
    with pytest.raises(ValueError):
        contact_sheet(**args)
    assert not (tmp_path / "x.png").exists()


def _history(epochs: int) -> list[dict[str, float]]:
    return [dict(epoch=e, train_loss=2 / e, train_acc=1 - 0.5 / e, val_loss=2.2 / e, val_acc=0.9 - 0.5 / e)
            for e in range(1, epochs + 1)]


def test_training_curves_writes_png(tmp_path: Path) -> None:
    image = _read(training_curves(_history(30), tmp_path / "deep" / "curves.png"))
    height, width = image.shape[:2]
    assert width > height >= 300  # two panels side by side
    assert image.std() > 10  # not a blank canvas


def test_training_curves_single_epoch(tmp_path: Path) -> None:
    image = _read(training_curves(_history(1), tmp_path / "one.png"))
    assert image.shape[1] > image.shape[0] >= 300


def test_training_curves_rejects_empty_history(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        training_curves([], tmp_path / "none.png")


def test_confusion_plot_writes_png_and_depends_on_counts(tmp_path: Path) -> None:
    labels = ["rotate_ccw", "rotate_cw", "zoom_in"]
    first = _read(confusion_plot(labels, [[5, 1, 0], [2, 7, 1], [0, 0, 9]], tmp_path / "a.png"))
    second = _read(confusion_plot(labels, [[0, 6, 0], [9, 0, 1], [3, 3, 3]], tmp_path / "b.png"))
    assert first.shape == second.shape and first.shape[0] >= 300
    assert not np.array_equal(first, second)
    # Same fractions, different raw counts: only the written numbers differ.
    doubled = _read(confusion_plot(labels, [[10, 2, 0], [4, 14, 2], [0, 0, 18]], tmp_path / "c.png"))
    assert not np.array_equal(first, doubled)


def test_confusion_plot_grows_with_classes_and_tolerates_empty_rows(tmp_path: Path) -> None:
    small = _read(confusion_plot(["a", "b"], [[1, 0], [0, 0]], tmp_path / "s.png"))
    labels = [f"class_{i}" for i in range(12)]
    big = _read(confusion_plot(labels, np.eye(12, dtype=int) * 3, tmp_path / "b.png"))
    assert big.shape[0] > small.shape[0] and big.shape[1] > small.shape[1]


def test_confusion_plot_rejects_mismatched_matrix(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        confusion_plot(["a", "b", "c"], [[1, 0], [0, 1]], tmp_path / "x.png")


@pytest.mark.parametrize("draw", [
    lambda out: training_curves(_history(2), out),
    lambda out: confusion_plot(["a", "b"], [[1, 0], [0, 1]], out),
])
def test_missing_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, draw) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(PlotDependencyError, match=r"pip install 'vidclf\[plot\]'") as info:
        draw(tmp_path / "x.png")
    assert isinstance(info.value, VidclfError)
    assert str(info.value).startswith("matplotlib is needed for ")
    assert not (tmp_path / "x.png").exists()


def test_contact_sheet_needs_no_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert _read(contact_sheet(_flat_frames(2, 16, 16), [0, 1], [0.0, 1.0], tmp_path / "s.png")).size
