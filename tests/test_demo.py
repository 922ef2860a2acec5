"""The demo weights kept in the repository (kit/demo): what they are and how they load."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch

from kit.demo import DEMO_DIR, demo_weights
from kit.errors import CheckpointNotFoundError
from scripts import shapes


def test_kept_demo_weights_are_a_float16_state_dict_matching_their_record() -> None:
    demo = demo_weights()
    assert demo.cfg == "cfg/training/yolov7-tiny.yaml" and demo.nc == 3
    assert demo.names == shapes.CLASSES and demo.img_size == shapes.IMAGE_SIZE
    assert hashlib.sha256(demo.weights.read_bytes()).hexdigest() == demo.record["sha256"]
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
