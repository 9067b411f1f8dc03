"""Run the align stage in a fresh process, checkpointing after every MTCNN batch.

It records the images of each batch it hands to MTCNN (as a JSON list, rewritten after
every batch) and can SIGKILL itself just before a given batch.

Usage, in a project directory with the repository on PYTHONPATH:
    python -m tests.stages.run_align DATASET RECORD [--kill-before BATCH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

from lightfer.faces.detect import FaceDetector
from stages import align


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("record", type=Path)
    parser.add_argument("--kill-before", type=int, metavar="BATCH", help="0-based batch index")
    args = parser.parse_args(argv)
    batches: list[int] = []
    detect_batch = FaceDetector.detect_batch

    def recorded(self, images):
        if len(batches) == args.kill_before:
            os.kill(os.getpid(), signal.SIGKILL)
        batches.append(len(images))
        args.record.write_text(json.dumps(batches))
        return detect_batch(self, images)

    FaceDetector.detect_batch = recorded
    align.CHECKPOINT_SECONDS = 0.0
    return align.main(["--dataset", args.dataset])


if __name__ == "__main__":
    raise SystemExit(main())
