"""``python detectron2_same_cfg.py [YAML]...`` in a patched detectron2 checkout: every .yaml config
of the checkout's configs/ and the files given, merged by detectron2's own merge_from_file (unsafe
YAML: these files are genuine) and by the kit's safe reader. Prints, as JSON, how many files were
merged and those whose two configs differ."""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    sys.path.insert(0, os.getcwd())  # the checkout, as its own tools import it
    from detectron2.config import get_cfg

    from kit.upstreams.loaders.detectron2 import merge_config
    from kit.upstreams.loaders.detectron2_config import read_config

    logging.disable(logging.WARNING)
    files = sorted(glob.glob("configs/**/*.yaml", recursive=True)) + argv
    differ = []
    for name in files:
        theirs, ours = get_cfg(), get_cfg()
        theirs.merge_from_file(name)
        merge_config(ours, read_config(name, checkout=Path(".")), name)
        if theirs != ours or theirs.dump() != ours.dump():
            differ.append(name)
    print(json.dumps({"files": len(files), "differ": differ}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
