"""`make bench`'s scale row: one run over the same images, timed, in this process or in each of a
torchrun group (the driver, ``scripts/bench/driver.py``, starts it both ways).

The run is ``Explainer.run`` of the demo detector (yolov7-tiny, the kit's kept weights, 256 px)
into a fresh run folder, timed from a barrier before it to its end (the final barrier and rank 0's
merge included); model loading and process start are not. Rank 0 prints one line
``SCALE <json>`` with the seconds and images per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkout", type=Path, required=True, help="the yolov7 checkout")
    parser.add_argument("--images", type=Path, required=True, help="folder of the images to explain")
    parser.add_argument("--out", type=Path, required=True, help="run folder (must not exist)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of a plain process")
    args = parser.parse_args(argv)

    import torch

    import kit
    from kit.run import distributed

    group = distributed.launched()
    if not group.active:
        torch.set_num_threads(args.threads)
    explainer = kit.load("yolov7", "demo", checkout=args.checkout, device="cpu")
    group = distributed.join(cuda=lambda: False)  # under torchrun: one thread per process on 2 cores
    distributed.barrier(group)
    started = time.perf_counter()
    result = explainer.run(args.images, args.out)
    seconds = time.perf_counter() - started
    if group.main:
        record = {
            "processes": group.world,
            "threads": torch.get_num_threads(),
            "images": result.images,
            "failed": result.failed,
            "seconds": round(seconds, 2),
            "images_per_second": round(result.images / seconds, 3),
        }
        print("SCALE " + json.dumps(record), flush=True)
    distributed.leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())
