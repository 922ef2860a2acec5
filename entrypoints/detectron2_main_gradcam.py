#!/usr/bin/env python
"""Per-detection Grad-CAM for detectron2, installed by the kit as main_gradcam.py
in the checkout.

Its flags are detectron2's demo/demo.py's and the kit's (``python main_gradcam.py --help``), built from the
upstream's spec (kit.upstreams.registry) by kit.cli.entry: this file is the template's copy for detectron2.
"""

from __future__ import annotations

import sys

from kit.cli.entry import entry_point, guarded

main = entry_point("detectron2", __file__)  # puts this file's folder (the checkout) first on sys.path

if __name__ == "__main__":
    sys.exit(guarded(main))
