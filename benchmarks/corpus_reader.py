"""Run the frame reader over ../shared/videos and print a table against the manifest.

Usage: python benchmarks/corpus_reader.py [CORPUS_DIR]
For each file: the header's frame count, the manifest's true decodable count, what
vidclf.probe counts, and the median time of sample_frames(T=16, 112 px) over 3 runs.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from vidclf.video import VideoError, probe, sample_frames


def main() -> int:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "videos"
    records = json.loads((corpus / "manifest.json").read_text())
    print("| file | codec | header | true | vidclf | match | sample ms (median of 3) |")
    print("|---|---|---:|---:|---:|:---:|---:|")
    matches = errors = 0
    for record in records:
        path = corpus / record["file"]
        try:
            info = probe(path)
            timings = []
            for _ in range(3):
                start = time.perf_counter()
                sample_frames(path, 16, size=112)
                timings.append((time.perf_counter() - start) * 1000)
            counted, ms = str(info.frame_count), f"{statistics.median(timings):.1f}"
            match = info.frame_count == record["cv2_decoded_frames"]
        except VideoError as exc:
            counted, ms, match = f"error: {exc.reason}", "-", False
            errors += 1
        matches += match
        print(f"| {record['file']} | {record['vcodec']} | {record['cv2_meta_frames']} | "
              f"{record['cv2_decoded_frames']} | {counted} | {'yes' if match else 'NO'} | {ms} |")
    print(f"\n{matches}/{len(records)} files decode exactly the true frame count; {errors} clear errors")
    return 0 if matches + errors == len(records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
