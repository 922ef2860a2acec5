"""`make demo` (scripts/demo/train.py) without a checkout: the checkout check both commands share,
the saved weights, their record and --install. Training itself runs on the real yolov7 checkout in
tests/integration/test_yolov7_demo.py."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from scripts.demo import kept, train
from scripts.eval import faithfulness


@pytest.mark.parametrize("main", [train.main], ids=["demo"])
def test_a_folder_that_is_no_yolov7_checkout_is_refused_with_exit_2(
    main: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = list(sys.path)
    assert callable(main) and main(["--checkout", str(tmp_path)]) == 2
    assert f"{tmp_path.resolve()} is not a yolov7 checkout (no models/yolo.py)" in capsys.readouterr().err
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "yolo.py").write_text("")
    assert main(["--checkout", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"(no {train.CFG}); run `make setup-yolov7` first" in err
    assert sys.path == before  # a refused folder never reaches sys.path


def test_a_checkout_goes_first_on_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for needed in ("models/yolo.py", train.CFG):
        (tmp_path / needed).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / needed).write_text("")
    monkeypatch.setattr(sys, "path", list(sys.path))
    threads = torch.get_num_threads()
    try:
        assert train.open_checkout(tmp_path, threads=1) == tmp_path.resolve()
        assert sys.path[0] == str(tmp_path.resolve()) and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_weights_are_saved_as_float16_with_integer_buffers_kept(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    weights = train.save_weights(model, tmp_path / "new")
    assert weights == tmp_path / "new" / "yolov7-tiny-shapes.pt"
    state = torch.load(weights, weights_only=True)
    assert state["0.weight"].dtype == torch.float16
    assert torch.equal(state["0.weight"], model[0].weight.detach().half())
    assert state["1.num_batches_tracked"].dtype == torch.int64


def test_the_record_names_the_weights_by_hash_and_keeps_the_training_options(tmp_path: Path) -> None:
    weights = tmp_path / "yolov7-tiny-shapes.pt"
    weights.write_bytes(b"weights")
    args = train.parse_args(
        ["--iterations", "3", "--batch-size", "2", "--eval-images", "5", "--threads", "1"]
    )
    record = train.training_record(args, weights=weights, seconds=12.345, scores={"found": 4, "objects": 5})
    assert record["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert (record["cfg"], record["nc"], record["names"]) == (train.CFG, 3, ["circle", "square", "triangle"])
    assert record["training"]["iterations"] == 3 and record["training"]["batch_size"] == 2
    assert record["training"]["seconds"] == 12.3 and record["training"]["threads"] == 1
    assert record["evaluation"] == {"images": 5, "split": "eval", "found": 4, "objects": 5}


def test_install_copies_the_weights_and_their_record_where_the_kit_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "out" / "yolov7-tiny-shapes.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"w")
    weights.with_suffix(".json").write_text(json.dumps({"cfg": train.CFG}))
    monkeypatch.setattr(kept, "KIT_DEMO_DIR", tmp_path / "kit_demo")
    kept.install(weights)
    assert (tmp_path / "kit_demo" / weights.name).read_bytes() == b"w"
    assert json.loads((tmp_path / "kit_demo" / "yolov7-tiny-shapes.json").read_text()) == {"cfg": train.CFG}


def test_the_kit_demo_folder_is_the_one_demo_weights_reads() -> None:
    from kit.upstreams import demo

    assert kept.KIT_DEMO_DIR == demo.DEMO_DIR and (kept.KIT_DEMO_DIR / f"{train.STEM}.json").is_file()


def test_both_commands_share_the_checkout_data_and_thread_flags() -> None:
    demo = train.parse_args([])
    evaluation = faithfulness.parse_args([])
    for args in (demo, evaluation):
        assert isinstance(args, argparse.Namespace)
        assert args.checkout is None and args.threads == 2
    assert demo.data_dir == evaluation.data_dir


def test_each_yolo_demo_is_built_from_its_checkouts_cfg_and_kept_under_its_specs_stem() -> None:
    from kit.upstreams.registry import get_spec

    assert {name: (r.cfg, r.hyp) for name, r in train.RECIPES.items()} == {
        "yolov7": ("cfg/training/yolov7-tiny.yaml", "data/hyp.scratch.tiny.yaml"),
        "yolov5": ("models/yolov5n.yaml", "data/hyps/hyp.scratch-low.yaml"),
        "yolov3": ("models/yolov3-tiny.yaml", "data/hyps/hyp.scratch.yaml"),
    }
    assert all(get_spec(name).demo == recipe.stem for name, recipe in train.RECIPES.items())
    assert train.TRAINED_UPSTREAMS == ("yolov7", "yolov5", "yolov3", "ultralytics", "detectron2")
    assert train.demo_upstream(["--upstream", "yolov3"], choices=train.TRAINED_UPSTREAMS) == "yolov3"
    assert (
        faithfulness.parse_args(["--upstream", "yolov5"]).upstream == "yolov5"
    )  # make eval measures any family
    with pytest.raises(SystemExit):
        faithfulness.parse_args(["--upstream", "yolov9"])


@pytest.mark.parametrize("upstream", ["yolov5", "yolov3"])
def test_a_checkout_without_the_upstreams_demo_cfg_is_refused_naming_its_setup(
    upstream: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for needed in ("models/yolo.py", train.CFG):  # a yolov7 checkout is no yolov5 or yolov3 one
        (tmp_path / needed).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / needed).write_text("")
    before = list(sys.path)
    assert train.main(["--upstream", upstream, "--checkout", str(tmp_path)]) == 2
    cfg = train.RECIPES[upstream].cfg
    err = capsys.readouterr().err
    assert f"{tmp_path.resolve()} is not a {upstream} checkout (no {cfg}); " in err
    assert f"run `make setup-{upstream}` first" in err
    assert sys.path == before


def test_the_record_of_a_yolov3_demo_names_its_upstream_cfg_hyp_and_stem(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    weights = train.save_weights(model, tmp_path, stem=train.RECIPES["yolov3"].stem)
    assert weights == tmp_path / "yolov3-tiny-shapes.pt"
    args = train.parse_args(["--upstream", "yolov3", "--iterations", "3"])
    record = train.training_record(args, weights=weights, seconds=1.0, scores={})
    assert (record["upstream"], record["cfg"], record["weights"]) == (
        "yolov3",
        "models/yolov3-tiny.yaml",
        "yolov3-tiny-shapes.pt",
    )
    assert record["training"]["hyp"] == "data/hyps/hyp.scratch.yaml"


def test_make_eval_refuses_a_folder_that_is_no_checkout_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert faithfulness.main(["--checkout", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path.resolve()} is not a yolov7 checkout (it has no models/yolo.py" in err
    assert "make setup-yolov7" in err
