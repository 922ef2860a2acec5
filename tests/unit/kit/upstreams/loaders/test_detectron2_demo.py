"""detectron2's demo detectors kept in kit/upstreams/demo: their configs pass the kit's safe config
reader, their weights match their records, and MODEL.WEIGHTS demo / demo-retinanet name them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kit.core.options import ArgumentError
from kit.upstreams import demo as kit_demo
from kit.upstreams.download import file_sha256
from kit.upstreams.loaders.detectron2 import DEFAULT_CONFIG, demo_request, named_weights
from kit.upstreams.loaders.detectron2_config import read_config
from kit.upstreams.registry import get_spec
from scripts.demo import shapes

STEMS = {"faster-rcnn": kit_demo.DETECTRON2_STEM, "retinanet": kit_demo.DETECTRON2_RETINANET_STEM}
MAX_BYTES = 20 * 1000 * 1000  # issue 25: at most 20 MB each in the repository


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A folder with the default config where a detectron2 checkout has it (its content unread)."""
    default = tmp_path / DEFAULT_CONFIG
    default.parent.mkdir(parents=True)
    default.write_text("_BASE_: ../Base-RCNN-FPN.yaml\n")
    return tmp_path


@pytest.mark.parametrize("arch", STEMS)
def test_each_demo_config_is_plain_data_the_safe_reader_accepts(arch: str, checkout: Path) -> None:
    config = read_config(kit_demo.DEMO_DIR / f"{STEMS[arch]}.yaml", checkout=checkout)
    model = config["MODEL"]
    assert model["META_ARCHITECTURE"] == {"faster-rcnn": "GeneralizedRCNN", "retinanet": "RetinaNet"}[arch]
    head = model["ROI_HEADS" if arch == "faster-rcnn" else "RETINANET"]
    assert head["NUM_CLASSES"] == len(shapes.CLASSES) and head["SCORE_THRESH_TEST"] == 0.5
    assert config["INPUT"]["MIN_SIZE_TEST"] == config["INPUT"]["MAX_SIZE_TEST"] == shapes.IMAGE_SIZE
    assert model["WEIGHTS"] == "" and "_BASE_" not in config  # no base to fetch, no weights to download


@pytest.mark.parametrize("arch", STEMS)
def test_each_kept_demo_is_float16_weights_under_20_mb_matching_its_record(arch: str) -> None:
    demo = kit_demo.demo_weights(stem=STEMS[arch])
    assert demo.cfg == f"{STEMS[arch]}.yaml" and (kit_demo.DEMO_DIR / demo.cfg).is_file()
    assert demo.names == shapes.CLASSES and demo.img_size == shapes.IMAGE_SIZE and demo.nc == 3
    assert demo.record["arch"] == arch and demo.record["upstream"] == "detectron2"
    assert file_sha256(demo.weights) == demo.record["sha256"]
    assert demo.weights.stat().st_size <= MAX_BYTES
    state = torch.load(demo.weights, map_location="cpu", weights_only=True)["model"]
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 and torch.isfinite(v).all() for v in floats)
    assert math.isfinite(demo.record["evaluation"]["recall@0.5"])


def test_the_weights_asked_for_are_the_argument_else_the_last_model_weights_of_opts() -> None:
    assert named_weights("a.pth", ["MODEL.WEIGHTS", "b.pth"]) == "a.pth"
    opts = ["MODEL.WEIGHTS", "b.pth", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "demo"]
    assert named_weights(None, opts) == "demo"
    assert named_weights(None, ["MODEL.DEVICE", "cpu"]) is None


@pytest.mark.parametrize(("name", "arch"), [("demo", "faster-rcnn"), ("demo-retinanet", "retinanet")])
def test_a_demo_name_gives_its_kept_weights_config_and_names(
    name: str, arch: str, checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no file named demo here
    own = kit_demo.DEMO_DIR / f"{STEMS[arch]}.yaml"
    for config in (DEFAULT_CONFIG, own):  # make cam passes the default config
        weights, config_file, names = demo_request(None, ["MODEL.WEIGHTS", name], config, checkout=checkout)
        assert weights == kit_demo.DEMO_DIR / f"{STEMS[arch]}.pt" and config_file == own
        assert names == shapes.CLASSES
    assert kit_demo.DETECTRON2_DEMOS[name] == STEMS[arch]
    assert get_spec("detectron2").demo == kit_demo.DETECTRON2_STEM and get_spec("detectron2").demo_fallback


def test_a_demo_with_another_config_is_refused_naming_both(checkout: Path, tmp_path: Path) -> None:
    other = tmp_path / "mine.yaml"
    other.write_text("MODEL: {DEVICE: cpu}\n")
    with pytest.raises(ArgumentError, match=r"mine.yaml: the weights 'demo' are the kit's demo detector"):
        demo_request("demo", (), other, checkout=checkout)


def test_a_file_named_demo_and_other_weights_are_left_as_given(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_bytes(b"a checkpoint of yours")
    assert demo_request("demo", (), DEFAULT_CONFIG, checkout=checkout) == ("demo", DEFAULT_CONFIG, None)
    assert demo_request(None, (), DEFAULT_CONFIG, checkout=checkout) == (None, DEFAULT_CONFIG, None)
    # the demo's config with weights of yours (trained again, say): the demo's class names
    own = kit_demo.DEMO_DIR / f"{kit_demo.DETECTRON2_RETINANET_STEM}.yaml"
    assert demo_request("mine.pth", (), own, checkout=checkout) == ("mine.pth", own, shapes.CLASSES)
