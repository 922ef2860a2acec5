"""``python yolov5_compute_ap.py`` in a yolov5 (v7.0) or yolov3 (v9.6.0, the same utils.metrics)
checkout: val.py's average precision of a two-point curve (recall 0.5 at precision 1, recall 1 at
precision 0.5) on the installed numpy (2.x removed np.trapz, which the unpatched compute_ap calls).
Prints the AP and the precision envelope and recall it integrates, as JSON."""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    if argv:
        raise ValueError(f"takes no arguments, got {argv}")
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    from utils.metrics import compute_ap

    ap, mpre, mrec = compute_ap([0.5, 1.0], [1.0, 0.5])
    print(json.dumps({"ap": float(ap), "precision": mpre.tolist(), "recall": mrec.tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
