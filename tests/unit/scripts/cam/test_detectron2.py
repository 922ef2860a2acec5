"""make cam for detectron2: demo.py-style command line, CONFIG, the model-zoo checkpoint of a config."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.cam import launch as cam
from scripts.upstream.errors import ConfigError

ZOO = """
class _ModelZooUrls:
    S3_PREFIX = "https://example.invalid/detectron2/"
    CONFIG_PATH_TO_URL_SUFFIX = {
        "COCO-Detection/retinanet_R_50_FPN_3x": "190397829/model_final_5bd44e.pkl",
    }
"""


def test_detectron2_command_has_demo_flags_and_opts_last_before_extra(tmp_path: Path) -> None:
    command = cam.build_command(
        "detectron2",
        python="py",
        weights=Path("/w/model.pkl"),
        source=Path("/img.jpg"),
        out=tmp_path / "run",
        extra=["--confidence-threshold", "0.3", "--opts", "MODEL.DEVICE", "cpu"],
    )
    assert command[:2] == ["py", "main_gradcam.py"]
    assert (
        command[command.index("--config-file") + 1] == "configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"
    )
    assert command[command.index("--input") + 1] == "/img.jpg"
    assert command[command.index("--output") + 1] == str(tmp_path / "run")
    assert command[command.index("MODEL.WEIGHTS") + 1] == "/w/model.pkl"
    assert command[-5:] == ["--confidence-threshold", "0.3", "--opts", "MODEL.DEVICE", "cpu"]


def test_config_overrides_the_default_and_yolo_commands_are_unchanged(tmp_path: Path) -> None:
    command = cam.build_command(
        "detectron2", python="py", weights="w", source=Path("s"), out=tmp_path, config="/c.yaml"
    )
    assert command[command.index("--config-file") + 1] == "/c.yaml"
    yolo = cam.build_command("yolov7", python="py", weights="w", source=Path("s"), out=tmp_path / "exp")
    assert yolo[2:] == ["--weights", "w", "--source", "s", "--project", str(tmp_path), "--name", "exp"]


def test_zoo_weights_url_reads_the_checkouts_table(tmp_path: Path) -> None:
    table = tmp_path / "detectron2" / "model_zoo" / "model_zoo.py"
    table.parent.mkdir(parents=True)
    table.write_text(ZOO)
    url = cam.zoo_weights_url(tmp_path, "configs/COCO-Detection/retinanet_R_50_FPN_3x.yaml")
    assert (
        url
        == "https://example.invalid/detectron2/COCO-Detection/retinanet_R_50_FPN_3x/190397829/model_final_5bd44e.pkl"
    )
    with pytest.raises(ConfigError, match="WEIGHTS=PATH"):
        cam.zoo_weights_url(tmp_path, "configs/mine.yaml")


def test_config_is_refused_for_upstreams_without_one() -> None:
    with pytest.raises(ConfigError, match="CONFIG"):
        cam.run_cam("yolov7", weights=None, source=None, out=None, extra=[], config="c.yaml")
