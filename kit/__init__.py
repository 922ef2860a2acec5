"""kit: per-detection Grad-CAM explanations for object detectors (yolov7, yolov3, yolov5, detectron2).

    import kit
    explainer = kit.load("yolov7", weights="demo")
    results = explainer.explain("inference/images", method="gradcam", target="class-logit")
    results[0].detections[0].maps["74"]  # float32 (height, width): the image's (longer side <= 2048), or None
    explainer.run("inference/images", out_dir="runs/cam/nb")  # the run folder main_gradcam.py writes

The public names are those of ``__all__``; they are imported on first use, so that ``import kit``
(and the command-line tools that only need ``kit.core.errors``) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kit.core import display as _display  # noqa: F401  (every kit log line shows names escaped)

__version__ = "0.1.0"
__all__ = ["DetectionResult", "ExplainRequest", "Explainer", "ImageResult", "KitError", "RunResult", "load"]

if TYPE_CHECKING:
    from kit.api import Explainer, ExplainRequest, RunResult, load
    from kit.core.errors import KitError
    from kit.core.results import DetectionResult, ImageResult

_HOMES = {
    "load": "kit.api",
    "Explainer": "kit.api",
    "RunResult": "kit.api",
    "ImageResult": "kit.core.results",
    "DetectionResult": "kit.core.results",
    "KitError": "kit.core.errors",
    "ExplainRequest": "kit.api",  # kit.run.request's, as the API takes it
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'kit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
