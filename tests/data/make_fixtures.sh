#!/usr/bin/env bash
# Rebuilds the committed video fixtures in tests/data/ (needs ffmpeg with libaom; tests don't).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python - "$tmp" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, str(Path.cwd().parent))
from indexed import write_indexed_video
out = Path(sys.argv[1])
write_indexed_video(out / "src40.avi", 40, 96, 64, 25.0)
write_indexed_video(out / "src24.avi", 24, 96, 64, 24.0)
import cv2
from indexed import indexed_frame
for i in range(9):  # OpenCV's writers round sizes down to even numbers: ffmpeg keeps 161x97
    cv2.imwrite(str(out / f"odd{i:02d}.png"), indexed_frame(i, 161, 97))
PY
# AV1 (web video): OpenCV 5.0.0.93 opens this but decodes 0 frames; 4.x decodes all 40.
ffmpeg -v error -y -i "$tmp/src40.avi" -c:v libaom-av1 -crf 30 -cpu-used 8 -pix_fmt yuv420p index40_av1.mp4
# MPEG-1 program stream: the container has no frame count (OpenCV reports 0).
ffmpeg -v error -y -i "$tmp/src40.avi" -c:v mpeg1video -q:v 2 -f mpeg index40_mpeg1.mpg
# Phone-style rotation metadata: stored landscape 96x64, displayed portrait 64x96.
ffmpeg -v error -y -i "$tmp/src24.avi" -c:v libx264 -crf 18 -pix_fmt yuv420p "$tmp/plain.mp4"
# (ffmpeg 5.1 writes the display matrix only when stream-copying.)
ffmpeg -v error -y -i "$tmp/plain.mp4" -c copy -metadata:s:v:0 rotate=90 index24_rot90.mp4
# Odd frame size 161x97 (4:4:4 chroma allows odd sizes) and a true grayscale pixel format.
ffmpeg -v error -y -framerate 12 -i "$tmp/odd%02d.png" -c:v libx264 -crf 10 -pix_fmt yuv444p index9_161x97.mp4
ffmpeg -v error -y -framerate 12 -i "$tmp/odd%02d.png" -c:v ffv1 -pix_fmt gray index9_gray.mkv
ls -l *.mp4 *.mpg *.mkv
