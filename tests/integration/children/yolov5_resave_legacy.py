"""``python yolov5_resave_legacy.py SRC DST`` in a yolov5 (v7.0) checkout: the checkpoint SRC (one
of ours, written by yolov5_save_checkpoint.py) saved again to DST in torch's legacy format
(``_use_new_zipfile_serialization=False``: no zip, the model pickle after three others). Prints
whether each file is a zip and DST's keys as JSON."""

from __future__ import annotations

import json
import os
import sys
import zipfile


def main(argv: list[str]) -> int:
    src, dst = argv
    sys.path.insert(0, os.getcwd())  # the checkout: unpickling imports its models package
    import torch

    checkpoint = torch.load(src, map_location="cpu", weights_only=False)
    torch.save(checkpoint, dst, _use_new_zipfile_serialization=False)
    zips = {"src_zip": zipfile.is_zipfile(src), "dst_zip": zipfile.is_zipfile(dst)}
    print(json.dumps({**zips, "keys": sorted(checkpoint)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
