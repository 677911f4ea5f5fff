"""Motion maps between sampled frames: the motion stream's input.

Frozen appearance features do not carry the direction of motion (a clip and its reverse look
alike frame by frame), so motion reaches the model explicitly, as small dense maps computed
with OpenCV between consecutive sampled frames:

- ``farneback``: Farnebäck dense optical flow (dx, dy), about 1.7 ms per frame pair at 112 px
  on one core. On the accuracy suite it beat DIS on growing/shrinking and turning objects
  (see benchmarks/accuracy/README.md).
- ``dis``: DIS optical flow, medium preset (dx, dy), about 0.7 ms per pair. On the suite it
  beat Farneback on camera pans and zooms over real footage (the ultrafast preset, 0.06 ms,
  was worse than medium at both).
- ``farneback+dis``: both flows (4 channels). The default: the model gives each flow its own
  stream (encoder, LSTM, head) and late fusion weighs them on validation, so each task gets
  the flow that suits it (on the suite: 96.7% synthetic, 88.1% camera; Farneback alone 94.2%
  and 72.2%, DIS alone 88.3% and 88.9%).
- ``diff``: the signed grey-level frame difference (one channel): no flow at all, the
  cheapest motion cue, for the ablations.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

MOTION_KINDS: tuple[str, ...] = ("farneback", "dis", "farneback+dis", "diff")
MOTION_NAMES = {"farneback": "OpenCV Farneback optical flow", "dis": "OpenCV DIS optical flow (medium)",
                "farneback+dis": "OpenCV Farneback and DIS (medium) optical flows",
                "diff": "grey-level frame difference"}
# Flow is measured in pixels at the sampled frame size; dividing by the frame side makes it a
# fraction of the frame, and this gain brings typical values near unit scale for the network.
FLOW_GAIN = 10.0
DIFF_GAIN = 4.0 / 255.0  # grey-level differences to a similar scale
# Farnebäck parameters: OpenCV's documented example (pyramid 0.5 × 3 levels, 15 px window,
# 3 iterations, degree-5 polynomials with σ 1.2).
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def motion_channels(kind: str) -> int:
    """Channels per step of a motion map: (dx, dy) per flow, 1 for frame difference."""
    return 1 if kind == "diff" else 2 * len(kind.split("+"))


def mirror_signs(kind: str) -> list[float]:
    """Per-channel factors that turn a clip's motion maps, flipped left-right, into the motion
    maps of the mirrored clip: a flow's dx changes sign, its dy and a frame difference do not."""
    return [1.0] if kind == "diff" else [-1.0, 1.0] * len(kind.split("+"))


def _flow_function(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if name == "farneback":
        return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return lambda prev, nxt: dis.calc(prev, nxt, None)


def _pair_function(kind: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(previous grey, next grey) → (H, W, C) float32 motion in pixels (or grey levels)."""
    if kind not in MOTION_KINDS:
        raise ValueError(f"motion must be one of {', '.join(MOTION_KINDS)}; got {kind!r}")
    if kind == "diff":
        return lambda prev, nxt: (nxt.astype(np.float32) - prev.astype(np.float32))[:, :, None]
    flows = [_flow_function(name) for name in kind.split("+")]
    if len(flows) == 1:
        return flows[0]
    return lambda prev, nxt: np.concatenate([flow(prev, nxt) for flow in flows], axis=2)


def clip_motion(frames_rgb: np.ndarray, kind: str, map_size: int) -> np.ndarray:
    """Motion from each sampled frame to the next, pooled to ``map_size``².

    ``frames_rgb`` is uint8 ``(T, S, S, 3)``; returns float32 ``(T, C, map_size, map_size)``.
    Flow holds (dx, dy) as a fraction of the frame side times ``FLOW_GAIN``. Step 0 has no
    predecessor and is zero, so step t describes the motion that led to frame t.
    """
    steps, side = frames_rgb.shape[0], frames_rgb.shape[1]
    channels = motion_channels(kind)
    maps = np.zeros((steps, channels, map_size, map_size), np.float32)
    pair = _pair_function(kind)
    if steps < 2:
        return maps
    gain = DIFF_GAIN if kind == "diff" else FLOW_GAIN / side
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames_rgb]
    for t in range(1, steps):
        pooled = cv2.resize(pair(gray[t - 1], gray[t]), (map_size, map_size), interpolation=cv2.INTER_AREA)
        maps[t] = pooled.reshape(map_size, map_size, channels).transpose(2, 0, 1) * gain
    return maps
