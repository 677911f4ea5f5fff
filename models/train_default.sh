#!/usr/bin/env bash
# Reproduces models/default.vidclf: vidclf's default settings on sample_clips/, seed 0.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDCLF="${VIDCLF:-.venv/bin/vidclf}"
"$VIDCLF" train sample_clips --out models/default.vidclf --seed 0 --force "$@"
