"""The demo weights kept in the repository (kit/demo): what they are and how they load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from kit.core.errors import CheckpointNotFoundError
from kit.upstreams.demo import DEMO_DIR, YOLOV3_STEM, YOLOV5_STEM, demo_weights, load_demo_model
from kit.upstreams.download import file_sha256
from scripts.demo import shapes


def test_kept_demo_weights_are_a_float16_state_dict_matching_their_record() -> None:
    demo = demo_weights()
    assert demo.cfg == "cfg/training/yolov7-tiny.yaml" and demo.nc == 3
    assert demo.names == shapes.CLASSES and demo.img_size == shapes.IMAGE_SIZE
    assert file_sha256(demo.weights) == demo.record["sha256"]
    state = torch.load(demo.weights, map_location="cpu", weights_only=True)
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert all(torch.isfinite(v).all() for v in floats)
    recall = demo.record["evaluation"]["recall@0.5"]
    assert math.isfinite(recall) and recall >= 0.95


def test_missing_demo_weights_say_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="make demo"):
        demo_weights(tmp_path)
    assert DEMO_DIR.name == "demo"
    for stem, upstream in ((YOLOV5_STEM, "yolov5"), (YOLOV3_STEM, "yolov3")):
        make = f"{stem}.json. Run `make demo UPSTREAM={upstream}`"
        with pytest.raises(CheckpointNotFoundError, match=make):
            demo_weights(tmp_path, stem=stem)


@pytest.mark.parametrize(
    ("stem", "cfg"), [(YOLOV5_STEM, "models/yolov5n.yaml"), (YOLOV3_STEM, "models/yolov3-tiny.yaml")]
)
def test_kept_yolov5_and_yolov3_demos_are_float16_under_20_mb_and_found_most_held_out_objects(
    stem: str, cfg: str
) -> None:
    demo = demo_weights(stem=stem)
    assert (demo.cfg, demo.nc, demo.names, demo.img_size) == (cfg, 3, shapes.CLASSES, shapes.IMAGE_SIZE)
    assert file_sha256(demo.weights) == demo.record["sha256"]
    assert demo.weights.stat().st_size <= 20 * 2**20  # the limit for a demo kept in the repo
    state = torch.load(demo.weights, map_location="cpu", weights_only=True)
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 and torch.isfinite(v).all() for v in floats)
    evaluation = demo.record["evaluation"]
    assert evaluation["images"] == 100 and evaluation["recall@0.5"] >= 0.9


class Fusable(nn.Module):
    """Just enough of yolov7's Model: a conv, an in-place activation, and ``fuse()``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.act = nn.ReLU(inplace=True)
        self.fused = False

    def fuse(self) -> Fusable:
        assert not torch.is_grad_enabled()  # IDetect.fuse() writes parameters in place
        self.fused = True
        return self


def test_demo_model_loads_float16_weights_as_float32_fused_and_out_of_place(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = Fusable()
    weights = tmp_path / "w.pt"
    torch.save({k: v.half() for k, v in source.state_dict().items()}, weights)
    model = load_demo_model(Fusable(), weights)
    assert isinstance(model, Fusable) and model.fused and not model.training
    assert model.conv.weight.dtype == torch.float32
    assert torch.equal(model.conv.weight, source.conv.weight.half().float())
    assert model.act.inplace is False
