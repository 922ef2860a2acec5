"""``python api_readme.py README RUN_DIR`` in a yolov7 checkout: the first ``python`` block of the
README's "Python API" section, run as a user runs it, then what it left checked. The block writes
its run folder to ``runs/cam/nb``, which must be RUN_DIR (relative to the checkout). Prints one
JSON object: the images and detections of its results, and whether each value the snippet names
has the type, size and dtype the README says."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

SECTION = "## Python API"


def snippet(readme: Path) -> str:
    """The first ``python`` block of the README's Python API section."""
    text = readme.read_text(encoding="utf-8")
    if SECTION not in text:
        raise ValueError(f"{readme} has no {SECTION!r} section")
    match = re.search(r"```python\n(.*?)```", text[text.index(SECTION) :], re.DOTALL)
    if match is None:
        raise ValueError(f"{readme}: its {SECTION!r} section has no python block")
    return match.group(1)


def checked(names: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What the snippet's values are, as the README describes them."""
    import cv2
    import numpy as np

    import kit

    r, d, cam, picture, results = (names[k] for k in ("r", "d", "cam", "picture", "results"))
    image = cv2.imread(r.file)
    if image is None:
        raise FileNotFoundError(f"{r.file} does not read as an image")
    height, width = image.shape[:2]
    maps = [m for det in r.detections for m in det.maps.values() if m is not None]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {
        "images": len(results),
        "detections": sum(len(x.detections) for x in results),
        "types": isinstance(r, kit.ImageResult) and isinstance(d, kit.DetectionResult),
        "size": [r.width, r.height] == [width, height],
        "maps": bool(maps) and all(m.dtype == np.float32 and m.shape == (height, width) for m in maps),
        "cam": cam is None or cam.shape == (height, width),
        "picture": picture.shape == (height, width, 3) and picture.dtype == np.uint8,
        "manifest_files": [i["file"] for i in manifest["images"]] == [x.file for x in results],
    }


def main(argv: list[str]) -> int:
    readme, run_dir = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as a notebook in it imports it
    names: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(snippet(Path(readme)), readme, "exec"), names)  # the README's code, as documented
    print(json.dumps(checked(names, Path(run_dir))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
