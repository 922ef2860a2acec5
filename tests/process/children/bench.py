"""A fake bench worker (``scripts.bench.common``'s flags and records, no model): ``python -m
tests.process.children.bench --cfg X.yaml ...``. It records ``plain``; a cfg named ``bad...`` then
dies, the others record ``kit-gradcam`` too. What it recorded reaches the driver either way."""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

from scripts.bench.common import Records, worker_parser


def main(argv: list[str]) -> int:
    args = worker_parser("a fake worker").parse_args(argv)
    records = Records(upstream=args.upstream, model=Path(args.cfg).stem, img_size=args.img_size)
    atexit.register(records.emit)
    records.add("head", 1, "plain", 1.0, 10.0, 1.0)
    if "bad" in args.cfg:
        raise RuntimeError("the worker dies after its first record")
    records.add("head", 1, "kit-gradcam", 1.5, 12.0, 1.0)
    records.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
