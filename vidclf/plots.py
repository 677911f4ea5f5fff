"""Pictures vidclf produces, as pure functions that each write one PNG and return its path.

`contact_sheet` needs only numpy + OpenCV (always installed), so a user can always see what
the model sees. `training_curves` and `confusion_plot` need matplotlib, an optional extra
(`pip install 'vidclf[plot]'`); it is imported lazily so the rest of vidclf never pays for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidclf.errors import VidclfError
from vidclf.files import atomic_write

# Contact-sheet geometry. Small frames (e.g. 112 px) are upscaled by an integer factor so
# the tile is at least this wide: captions stay legible and pixels stay exact (no blur).
MIN_TILE_WIDTH = 160
_GAP = 4  # px between tiles and around the edge
_BACKGROUND = (48, 48, 48)  # BGR; neutral so frame colours read true
_CAPTION_BG = (24, 24, 24)
_CAPTION_FG = (235, 235, 235)
_TITLE_FG = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_CAPTION_SCALE = 0.5
_TITLE_SCALE = 0.7
_MIN_TEXT_SCALE = 0.45  # below this Hershey text is unreadable: truncate instead


class PlotDependencyError(VidclfError):
    """matplotlib (the optional `plot` extra) is needed but not installed."""


def contact_sheet(
    frames: np.ndarray,
    indices: Sequence[int],
    timestamps_s: Sequence[float] | None,
    out: Path,
    title: str = "",
    columns: int = 8,
) -> Path:
    """Draw frames (uint8 RGB, shape (T, H, W, 3)) in a grid, each captioned `#index` and `t.tts`.

    The frames are drawn exactly as given (only nearest-neighbour upscaled), so the sheet
    shows precisely what the model sees. Rows fill left to right, top to bottom.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    count, height, width = frames.shape[:3]
    if count == 0 or height == 0 or width == 0:
        raise ValueError(f"no frames to draw (shape {frames.shape})")
    if len(indices) != count:
        raise ValueError(f"{len(indices)} indices for {count} frames")
    if timestamps_s is not None and len(timestamps_s) != count:
        raise ValueError(f"{len(timestamps_s)} timestamps for {count} frames")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")

    scale = max(1, math.ceil(MIN_TILE_WIDTH / width))
    tile_w, tile_h = width * scale, height * scale
    cols = min(columns, count)
    rows = math.ceil(count / cols)

    caption_scale = _CAPTION_SCALE * max(1.0, tile_w / 320)  # keep text in proportion on big tiles
    caption_thick = 2 if caption_scale >= 0.9 else 1  # thin strokes vanish at large sizes
    (_, text_h), baseline = cv2.getTextSize("#0 0.00s", _FONT, caption_scale, caption_thick)
    caption_h = text_h + baseline + 10
    cell_h = tile_h + caption_h

    sheet_w = cols * tile_w + (cols + 1) * _GAP
    title_text = _ascii(title)
    title_h = 0
    if title_text:
        (_, t_h), t_base = cv2.getTextSize(title_text, _FONT, _TITLE_SCALE, 1)
        title_h = t_h + t_base + 16
    sheet_h = title_h + rows * cell_h + (rows + 1) * _GAP

    sheet = np.empty((sheet_h, sheet_w, 3), np.uint8)
    sheet[:] = _BACKGROUND
    if title_text:
        _put_fitted(sheet, title_text, x=_GAP + 4, y_top=0, box_h=title_h,
                    max_w=sheet_w - 2 * (_GAP + 4), scale=_TITLE_SCALE, colour=_TITLE_FG, thickness=1)

    for i in range(count):
        row, col = divmod(i, cols)
        x = _GAP + col * (tile_w + _GAP)
        y = title_h + _GAP + row * (cell_h + _GAP)
        # RGB -> BGR here, once per tile, because cv2.imwrite expects BGR.
        tile = frames[i, :, :, ::-1]
        if scale > 1:
            tile = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
        sheet[y:y + tile_h, x:x + tile_w] = tile
        cap_y = y + tile_h
        sheet[cap_y:cap_y + caption_h, x:x + tile_w] = _CAPTION_BG
        left = f"#{int(indices[i])}"
        right = f"{float(timestamps_s[i]):.2f}s" if timestamps_s is not None else ""
        _put_caption(sheet, left, right, x, cap_y, tile_w, caption_h, caption_scale, caption_thick)

    out = Path(out)
    try:
        encoded, data = cv2.imencode(out.suffix or ".png", sheet)
    except cv2.error:
        encoded = False
    if not encoded:
        raise VidclfError(f"could not encode image {out}; give a name that ends in .png")
    with atomic_write(out) as handle:
        handle.write(data.tobytes())
    return out


def training_curves(history: Sequence[Mapping[str, float]], out: Path) -> Path:
    """Plot loss and accuracy per epoch, train vs val, with the best val-accuracy epoch marked.

    History rows need keys epoch, train_loss, train_acc, val_loss, val_acc (accuracies as
    fractions 0..1, as `vidclf.train` records them).
    """
    if not history:
        raise ValueError("history is empty: nothing to plot")
    Figure, FigureCanvasAgg, ticker = _matplotlib("training curves")

    epochs = [int(row["epoch"]) for row in history]
    series = {key: [float(row[key]) for row in history]
              for key in ("train_loss", "val_loss", "train_acc", "val_acc")}
    # Highest val acc, then lowest val loss (training keeps it only if it beats the last significantly).
    best = max(range(len(history)),
               key=lambda i: (_finite(series["val_acc"][i]), -_finite(series["val_loss"][i], math.inf)))
    best_epoch = epochs[best]
    has_val = any(math.isfinite(v) for v in series["val_acc"])  # none when choices were cross-validated

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    marker = "o" if len(epochs) <= 40 else None  # markers would smear into a line beyond that
    for ax, kind, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, series[f"train_{kind}"], marker=marker, markersize=4, label=f"train {label}")
        if has_val:
            ax.plot(epochs, series[f"val_{kind}"], marker=marker, markersize=4, label=f"val {label}")
            ax.axvline(best_epoch, color="0.5", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label.capitalize())
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    if len(epochs) == 1:  # a lone point gets a degenerate x-range otherwise
        for ax in (ax_loss, ax_acc):
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
            ax.set_xticks([epochs[0]])
    losses = [v for v in series["train_loss"] + series["val_loss"] if math.isfinite(v)]
    top = max(losses, default=1.0)
    ax_loss.set_ylim(0, top * 1.08 if top > 0 else 1.0)  # headroom so the top point isn't clipped
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.yaxis.set_major_formatter(ticker.PercentFormatter(xmax=1.0))
    if has_val:
        best_acc = series["val_acc"][best]
        ax_acc.plot([best_epoch], [best_acc], marker="*", markersize=14, color="tab:red", linestyle="none",
                    label=f"best val acc {best_acc:.1%}")
    ax_loss.legend(loc="best")
    ax_acc.legend(loc="best")
    return _save(fig, out)


def confusion_plot(
    labels: Sequence[str],
    matrix: Sequence[Sequence[int]],
    out: Path,
    title: str = "Confusion matrix",
) -> Path:
    """Heat map of a confusion matrix: rows = true label, columns = predicted label.

    Colours are row-normalised (so rare classes are as visible as common ones); each cell
    shows the raw count.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(labels)
    if n == 0 or counts.shape != (n, n):
        raise ValueError(f"matrix must be {n}x{n} to match {n} labels, got shape {counts.shape}")
    Figure, FigureCanvasAgg, _ = _matplotlib("the confusion plot")

    row_sums = counts.sum(axis=1, keepdims=True)
    # A class with no true samples gets an all-zero row rather than a division by zero.
    fractions = np.divide(counts, row_sums, out=np.zeros(counts.shape, float), where=row_sums > 0)

    longest = max(len(str(label)) for label in labels)
    side = max(4.0, 0.55 * n + 0.07 * longest + 1.5)  # grows with class count and name length
    fig = Figure(figsize=(side + 1.3, side), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    cbar = fig.colorbar(image, ax=ax, shrink=0.8)
    cbar.set_label("fraction of true label")

    font = 10.0 if n <= 10 else max(6.0, 10.0 - 0.2 * (n - 10))  # cells shrink relative to text
    for r in range(n):
        for c in range(n):
            colour = "white" if fractions[r, c] > 0.5 else "black"
            ax.text(c, r, str(counts[r, c]), ha="center", va="center", color=colour, fontsize=font)
    ax.set_xticks(range(n), [str(label) for label in labels], rotation=45, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(range(n), [str(label) for label in labels])
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    if title:
        ax.set_title(title)
    return _save(fig, out)


def _matplotlib(what: str) -> tuple[Any, Any, Any]:
    """Import matplotlib on first use; Figure + FigureCanvasAgg avoid pyplot's global state."""
    try:
        import matplotlib  # noqa: F401  (imported first so an absent package is caught here)
        from matplotlib import ticker
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotDependencyError(
            f"matplotlib is needed for {what}; install it with: pip install 'vidclf[plot]'"
        ) from exc
    return Figure, FigureCanvasAgg, ticker


def _save(fig: Any, out: Path) -> Path:
    out = Path(out)
    with atomic_write(out) as handle:
        fig.savefig(handle, format=out.suffix.lstrip(".") or "png", dpi=110, facecolor="white")
    return out


def _finite(value: float, default: float = -math.inf) -> float:
    """NaN (e.g. an epoch without validation) must never win the best-epoch comparison."""
    return value if math.isfinite(value) else default


def _ascii(text: str) -> str:
    # OpenCV's Hershey fonts draw only ASCII; say '?' plainly rather than draw garbage.
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text).strip()


def _put_fitted(img: np.ndarray, text: str, x: int, y_top: int, box_h: int, max_w: int,
                scale: float, colour: tuple[int, int, int], thickness: int) -> None:
    """Draw text vertically centred in a box, shrinking (then truncating) it to fit max_w."""
    while scale > _MIN_TEXT_SCALE and cv2.getTextSize(text, _FONT, scale, thickness)[0][0] > max_w:
        scale -= 0.05
    while len(text) > 1 and cv2.getTextSize(text, _FONT, scale, thickness)[0][0] > max_w:
        text = text[:-4] + "..." if len(text) > 4 else text[:-1]
    (_, h), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    y = y_top + (box_h + h) // 2
    cv2.putText(img, text, (x, y), _FONT, scale, colour, thickness, cv2.LINE_AA)


def _put_caption(img: np.ndarray, left: str, right: str, x: int, y: int, w: int, h: int,
                 scale: float, thickness: int) -> None:
    """`#index` at the left of the strip, the timestamp at the right."""
    pad = 5
    right_w = cv2.getTextSize(right, _FONT, scale, thickness)[0][0] if right else 0
    left_max = w - 2 * pad - (right_w + 2 * pad if right else 0)
    _put_fitted(img, left, x + pad, y, h, max(left_max, 1), scale, _CAPTION_FG, thickness)
    if right:
        (_, th), _ = cv2.getTextSize(right, _FONT, scale, thickness)
        cv2.putText(img, right, (x + w - pad - right_w, y + (h + th) // 2), _FONT, scale,
                    _CAPTION_FG, thickness, cv2.LINE_AA)
