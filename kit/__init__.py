"""kit: per-detection Grad-CAM explanations for object detectors, independent of any upstream repo."""

from __future__ import annotations

__version__ = "0.1.0"
