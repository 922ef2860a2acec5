"""Shared test pieces: a toy detector adapter that runs through :func:`kit.run.runner.run` in milliseconds.

Also imported (as ``tests.conftest``) by the children of the process tier (``tests/process/children/``,
``tests/toy_main.py``), with the project root on ``sys.path``, so a run can be interrupted or run
under a file-size limit in a process of its own.

Every test is in one tier, by its folder: ``tests/unit`` (no child process, no upstream, no browser),
``tests/process`` (CLI subprocesses, torchrun, signals, Chromium, the children of ``tests/children.py``)
and ``tests/integration`` (real upstreams). The tier is the test's marker (``pytest -m unit``); a test
outside the three folders is a collection error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from kit.core.contract import Capabilities, LevelLayers
from kit.core.detection import Detection
from kit.core.errors import KitError
from kit.core.geometry import Letterbox

if TYPE_CHECKING:
    from kit.api import Explainer

# The run folders and the browser of tests/runs.py are fixtures of every tier (the report's unit and
# browser tests, and the integration test on a real run, share them).
pytest_plugins = ("tests.runs",)

TIERS = ("unit", "process", "integration")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier, the first folder under tests/; refuse a test that has none."""
    tests = Path(__file__).resolve().parent
    for item in items:
        relative = Path(item.path).resolve().relative_to(tests)
        tier = relative.parts[0] if len(relative.parts) > 1 else ""
        if tier not in TIERS:
            raise pytest.UsageError(
                f"{item.nodeid} is in no test tier: move {relative} under tests/unit, tests/process "
                "or tests/integration (CONTRIBUTING.md, Tests)"
            )
        item.add_marker(getattr(pytest.mark, tier))


class ToyModel(nn.Module):
    """One 3x3 conv (the explained layer ``feat``), then a 1x1 head of 2 class logits per pixel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.feat = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.feat(x))).flatten(2).transpose(1, 2)  # (B, H*W, 2)


class ToyOutput:
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def class_logit(self, detections: Sequence[Detection]) -> torch.Tensor:
        b = torch.tensor([d.image_index for d in detections])
        r = torch.tensor([d.row for d in detections])
        c = torch.tensor([d.class_id for d in detections])
        return self.logits[b, r, c]

    def class_probability(self, detections: Sequence[Detection]) -> torch.Tensor:
        return torch.sigmoid(self.class_logit(detections))

    def score(self, detections: Sequence[Detection]) -> torch.Tensor:
        return torch.sigmoid(self.class_logit(detections))

    def class_probabilities(self, detections: Sequence[Detection]) -> torch.Tensor:
        b = torch.tensor([d.image_index for d in detections])
        r = torch.tensor([d.row for d in detections])
        return torch.sigmoid(self.logits[b, r])


class ToyAdapter:
    """A detector with one detection per image: the whole content, read at its centre pixel.

    ``preprocess`` letterboxes as yolov7's ``letterbox(auto=True)`` does (longer side to
    ``img_size``, each side rounded, padded to a multiple of ``stride``); so a 10 x 10000 image
    fails there exactly as it does in yolov7 (``cv2.resize`` to a 0-pixel side). ``poison`` marks
    images whose forward pass raises (a RuntimeError, as torch would); ``delay`` slows each forward.
    """

    def __init__(
        self,
        *,
        img_size: int = 32,
        stride: int = 8,
        delay: float = 0.0,
        poison: Callable[[np.ndarray], bool] | None = None,
    ) -> None:
        self.model = ToyModel().eval()
        self.names = ["blob", "other"]
        # the general backward only; its one level's layer (--method odam) is ``feat``
        self.capabilities = Capabilities(level_layers=LevelLayers(layers=("feat",)))
        self.img_size, self.stride, self.delay, self.poison = img_size, stride, delay, poison
        self.forwards: list[int] = []  # batch size of each forward, for tests
        self._poisoned = False
        self._boxes: list[Letterbox] = []

    def default_layers(self) -> list[str]:
        return ["feat"]

    def resolve_layers(self, names: Sequence[str]) -> dict[str, nn.Module]:
        unknown = [n for n in names if n != "feat"]
        if unknown:
            raise KitError(f"unknown layer {unknown[0]!r}; the toy model has 'feat'")
        return {"feat": self.model.feat}

    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Letterbox]]:
        resized = []
        for image in images_bgr:
            h, w = image.shape[:2]
            r = self.img_size / max(h, w)
            resized.append(cv2.resize(image, (int(round(w * r)), int(round(h * r)))))
        ih = max(-(-im.shape[0] // self.stride) * self.stride for im in resized)
        iw = max(-(-im.shape[1] // self.stride) * self.stride for im in resized)
        batch = torch.zeros(len(resized), 3, ih, iw)
        boxes = []
        for k, (image, small) in enumerate(zip(images_bgr, resized)):
            h, w = image.shape[:2]
            ch, cw = small.shape[:2]
            top, left = (ih - ch) // 2, (iw - cw) // 2
            batch[k, :, top : top + ch, left : left + cw] = torch.from_numpy(small).permute(2, 0, 1) / 255.0
            boxes.append(Letterbox(input_hw=(ih, iw), content=(top, left, ch, cw), original_hw=(h, w)))
        self._poisoned = self.poison is not None and any(self.poison(im) for im in images_bgr)
        self._boxes = boxes
        return batch, boxes

    def forward(self, batch: torch.Tensor) -> ToyOutput:
        self.forwards.append(len(batch))
        if self.delay:
            time.sleep(self.delay)
        if self._poisoned:
            raise RuntimeError("toy forward: a poisoned image in the batch")
        self._width = batch.shape[-1]
        return ToyOutput(self.model(batch))

    def detect(self, output: Any) -> list[Detection]:
        detections = []
        for k, box in enumerate(self._boxes):
            top, left, ch, cw = box.content
            row = (top + ch // 2) * self._width + left + cw // 2
            detections.append(
                Detection(
                    image_index=k,
                    box_xyxy=(float(left), float(top), float(left + cw), float(top + ch)),
                    class_id=0,
                    score=0.9,
                    row=int(row),
                    level=0,
                )
            )
        return detections


def installed_checkout(folder: Path) -> Callable[[object, str], Path]:
    """A fake ``checkout_path``: ``folder/<name>`` with the kit's current entry point installed."""

    def checkout_path(project: object, name: str) -> Path:
        (folder / name).mkdir(parents=True, exist_ok=True)
        entry = Path(__file__).resolve().parents[1] / "entrypoints" / f"{name}_main_gradcam.py"
        (folder / name / "main_gradcam.py").write_bytes(entry.read_bytes())
        return folder / name

    return checkout_path


def fake_cam_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """``make cam``'s driver against a fake checkout in ``tmp_path``: the commands it would run are
    appended to the list returned, none is started."""
    from scripts.cam import launch as cam

    calls: list[list[str]] = []
    monkeypatch.setattr(cam, "checkout_path", installed_checkout(tmp_path / "checkouts"))
    monkeypatch.setattr(cam, "run_child", lambda command, cwd: calls.append(list(command)) or 0)
    monkeypatch.chdir(tmp_path)
    return calls


def toy_explainer() -> Explainer:
    """The toy detector behind the public facade, as kit.load would return it."""
    from kit.api import Explainer
    from kit.upstreams.loaders import Loaded

    return Explainer(
        Loaded(adapter=ToyAdapter(), weights="toy.pt", settings={"img_size": 32}), upstream="toy"
    )


def picture(seed: int, hw: tuple[int, int] = (24, 40)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*hw, 3), dtype=np.uint8)
