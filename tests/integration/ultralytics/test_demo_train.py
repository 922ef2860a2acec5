"""`make demo UPSTREAM=ultralytics` (scripts/demo/ultralytics_train.py) without training: the dispatch
of `--upstream`, the dataset in Ultralytics' layout, the refusals, and the demo record's loader."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kit.core.errors import CheckpointError, CheckpointNotFoundError
from kit.upstreams import demo as kit_demo
from kit.upstreams.loaders import ultralytics as ultralytics_loader
from scripts.demo import shapes, train, ultralytics_train


def test_demo_upstream_is_yolov7_unless_another_is_asked_and_other_names_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert train.demo_upstream([]) == "yolov7"
    assert train.demo_upstream(["--iterations", "3"]) == "yolov7"
    assert train.demo_upstream(["--upstream=ultralytics", "--epochs", "2"]) == "ultralytics"
    assert train.demo_upstream(["--upstream", "yolov7"]) == "yolov7"
    assert train.demo_upstream(["--upstream", "yolov5"]) == "yolov5"  # every upstream has a demo now
    with pytest.raises(SystemExit) as exit_info:
        train.demo_upstream(["--upstream", "yolov9"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'yolov9'" in capsys.readouterr().err


def test_the_dataset_is_the_shapes_in_ultralytics_layout(tmp_path: Path) -> None:
    data_yaml = ultralytics_train.write_dataset(tmp_path, train_images=3, eval_images=2, seed=0)
    spec = yaml.safe_load(data_yaml.read_text())
    assert spec["path"] == str(tmp_path)
    assert (spec["train"], spec["val"]) == ("train/images", "images")
    assert spec["names"] == dict(enumerate(shapes.CLASSES))
    assert sorted(p.name for p in (tmp_path / "train" / "images").iterdir()) == [
        "train_0000.png",
        "train_0001.png",
        "train_0002.png",
    ]
    # the evaluation set is the yolov7 demo's, where it writes it: Ultralytics' images -> labels rule
    assert sorted(p.name for p in (tmp_path / "labels").glob("*.txt")) == ["eval_0000.txt", "eval_0001.txt"]
    _, rows = shapes.make_image(1, split="train", seed=0)
    written = np.loadtxt(tmp_path / "train" / "labels" / "train_0001.txt", ndmin=2)
    np.testing.assert_allclose(written, rows, atol=1e-6)


@pytest.mark.parametrize("flag", ["--epochs", "--train-images", "--batch-size", "--eval-images"])
def test_counts_below_one_are_refused_with_exit_2_before_anything_is_written(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--upstream", "ultralytics", flag, "0", "--weights-dir", str(tmp_path / "w")]
    assert train.main([*argv, "--data-dir", str(tmp_path / "d")]) == 2
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_checkout_without_the_package_is_refused_and_left_off_sys_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = list(sys.path)
    assert ultralytics_train.open_ultralytics(tmp_path) is None
    assert f"{tmp_path} holds no ultralytics package" in capsys.readouterr().err
    assert sys.path == before


def test_the_offline_switch_is_set_and_settings_stay_in_the_demo_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    monkeypatch.delenv("YOLO_CONFIG_DIR", raising=False)
    monkeypatch.setenv("YOLO_AUTOINSTALL", "true")
    ultralytics_train.offline_environment(tmp_path)
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "false"
    assert os.environ["YOLO_CONFIG_DIR"] == str(tmp_path / "ultralytics-settings")
    assert (tmp_path / "ultralytics-settings").is_dir()
    monkeypatch.setenv("YOLO_CONFIG_DIR", "/elsewhere")  # a user's own choice is kept
    ultralytics_train.offline_environment(tmp_path)
    assert os.environ["YOLO_CONFIG_DIR"] == "/elsewhere"


def test_the_record_names_no_machine_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ultralytics = pytest.importorskip("ultralytics")
    args = ultralytics_train.parse_args(["--weights-dir", str(tmp_path), "--data-dir", str(tmp_path)])
    weights = tmp_path / "yolo11n-shapes.pt"
    torch.save({"model": None}, weights)
    record = ultralytics_train.training_record(args, weights=weights, seconds=1.0, metrics={}, scores={})
    text = json.dumps(record)
    assert str(tmp_path) not in text and "/tmp" not in text
    assert record["training"]["trainer"].startswith(f"ultralytics {ultralytics.__version__} ")
    assert record["training"]["epochs"] == args.epochs and record["img_size"] == shapes.IMAGE_SIZE


def test_a_missing_ultralytics_demo_names_its_make_command(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="make demo UPSTREAM=ultralytics"):
        kit_demo.demo_weights(tmp_path, stem=kit_demo.ULTRALYTICS_STEM)
    with pytest.raises(CheckpointNotFoundError, match=r"Run `make demo` to train them \(about 10 minutes"):
        kit_demo.demo_weights(tmp_path)  # yolov7's message as it was


def test_scrubbed_settings_keep_a_path_s_name_only() -> None:
    settings = {"data": "/home/me/data/demo/shapes-ultralytics.yaml", "project": "/x/runs", "name": "exp"}
    settings |= {"epochs": 6, "model": "yolo11n.yaml", "save_dir": "runs/detect/exp"}
    assert ultralytics_train.scrubbed(settings) == {
        "data": "shapes-ultralytics.yaml",
        "project": "runs",
        "name": "exp",
        "epochs": 6,
        "model": "yolo11n.yaml",
        "save_dir": "runs/detect/exp",
    }


def test_a_checkpoint_without_the_demo_model_is_a_checkpoint_error(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    torch.save({"weight": torch.zeros(2, 2).half()}, tmp_path / f"{kit_demo.ULTRALYTICS_STEM}.pt")
    record = {"cfg": kit_demo.ULTRALYTICS_CFG, "nc": 3, "names": list(shapes.CLASSES), "img_size": 256}
    (tmp_path / f"{kit_demo.ULTRALYTICS_STEM}.json").write_text(json.dumps(record))
    demo = kit_demo.demo_weights(tmp_path, stem=kit_demo.ULTRALYTICS_STEM)
    with pytest.raises(CheckpointError, match="holds no DetectionModel of yolo11n.yaml with nc=3"):
        ultralytics_loader.demo_model(demo)


@pytest.mark.parametrize("side", [["--ultralytics-cam"], []], ids=["side-by-side", "make-eval"])
def test_the_side_by_side_refuses_a_missing_checkpoint_with_exit_2(
    side: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ultralytics = pytest.importorskip("ultralytics")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)  # each restored after the test
    monkeypatch.delenv("YOLO_AUTOINSTALL", raising=False)
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "settings"))
    from scripts.eval import faithfulness

    checkout = str(Path(ultralytics.__file__).parents[1])  # the checkout the package is imported from
    argv = ["--upstream", "ultralytics", "--weights", str(tmp_path / "missing.pt"), "--images", "1"]
    argv += ["--checkout", checkout, *side]
    assert faithfulness.main([*argv, "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err  # names the file (or, before the ultralytics loader, the upstream)
    assert err.startswith("error: ") and ("missing.pt" in err or "unknown upstream 'ultralytics'" in err)
    assert not (tmp_path / "o").exists()
