"""``python hostile_load_each.py UPSTREAM PATH...`` in a YOLO checkout: each file through the
upstream's loader as the entry point loads it (attempt_load, then the kit's adapter), in one
process whose address space is limited to what it mapped so far plus 1.5 GB (a refusal of a
tampered file must come before the code allocates from the number changed). Prints one JSON
object: each file's name and the KitError's message, or ``loaded``."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

HEADROOM = 3 << 29  # 1.5 GB


def mapped_bytes() -> int:
    """This process's virtual size (VmSize of /proc/self/status)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmSize:")[1].split()[0]) * 1024


def main(argv: list[str]) -> int:
    upstream, *paths = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    import torch  # noqa: F401  (mapped before the limit, as the entry point has it)

    from kit.core.errors import KitError
    from kit.upstreams.loaders.yolo import YoloOptions, load

    limit = mapped_bytes() + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = {}
    for path in paths:
        try:
            load(upstream, Path.cwd(), path, options=YoloOptions(img_size=320))
            out[Path(path).name] = "loaded"
        except KitError as error:
            out[Path(path).name] = str(error)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
