#!/usr/bin/env python
"""Per-detection Grad-CAM for the ultralytics package (8.4.190), installed by the kit as main_gradcam.py
in the checkout.

Its flags are `yolo predict`'s (key=value) and the kit's (``python main_gradcam.py --help``), built from the
upstream's spec (kit.upstreams.registry) by kit.cli.entry: this file is the template's copy for ultralytics.
"""

from __future__ import annotations

import sys

from kit.cli.entry import entry_point, guarded

main = entry_point("ultralytics", __file__)  # puts this file's folder (the checkout) first on sys.path

if __name__ == "__main__":
    sys.exit(guarded(main))
