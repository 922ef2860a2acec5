"""Shared CLI pieces: argument checks, checkpoints of another kind, exit codes, --half."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import cv2
import pytest
import torch
from torch import nn

import kit.api
from kit.cli import main as cli
from kit.core import errors, options
from kit.core.contract import Capabilities
from kit.core.errors import CheckpointError, KitError
from kit.run import request
from kit.upstreams import checkpoints
from kit.upstreams.loaders import Loaded, half_precision
from tests.conftest import picture, toy_explainer


def test_half_is_refused_on_the_cpu_with_the_fix() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(KitError, match=r"--half needs a CUDA device.*on cpu.*Drop --half"):
        half_precision(model, torch.device("cpu"))
    assert model.weight.dtype == torch.float32  # nothing changed


def test_half_converts_the_model_on_cuda() -> None:
    model = half_precision(nn.Linear(2, 2), SimpleNamespace(type="cuda"))
    assert model.weight.dtype == torch.float16


# ---- arguments, checked before anything loads ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        ("  ", []),
        ("102", ["102"]),
        (" 102, 103 ,104", ["102", "103", "104"]),
        ("model.24.m", ["model.24.m"]),
    ],
)
def test_parse_layers_accepts_indices_and_names(value: str, expected: list[str]) -> None:
    assert request.parse_layers(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (",", r"--target-layers ',' has an empty entry.*102,103,104"),
        ("102,,103", r"'102,,103' has an empty entry"),
        ("102,", r"'102,' has an empty entry"),
        ("-1", r"layer -1 is negative.*count from 0.*-1 being the head itself"),
        ("74,-3", r"layer -3 is negative"),
        ("102,103,102", r"names 102 more than once"),
        ("a.b, a.b", r"names a.b more than once"),
    ],
)
def test_parse_layers_refuses_empty_negative_and_repeated(value: str, message: str) -> None:
    with pytest.raises(options.ArgumentError, match=message):
        request.parse_layers(value)


def test_sizes_thresholds_and_max_det() -> None:
    assert options.check_positive("--img-size", 1) == 1
    for bad in (0, -1):
        with pytest.raises(
            options.ArgumentError, match=rf"--img-size must be a positive number of pixels, got {bad}"
        ):
            options.check_positive("--img-size", bad)
    assert [options.check_fraction("--conf-thres", v) for v in (0.0, 0.25, 1.0)] == [0.0, 0.25, 1.0]
    for bad in (-0.01, 1.5, float("nan"), float("inf")):
        with pytest.raises(options.ArgumentError, match=rf"--conf-thres must be between 0 and 1, got {bad}"):
            options.check_fraction("--conf-thres", bad)
    assert options.check_max_det(None) is None and options.check_max_det(1) == 1
    for bad in (0, -1):  # 0 would explain nothing; -1 sliced off the last detection
        with pytest.raises(options.ArgumentError, match=rf"--max-det must be at least 1.*got {bad}"):
            options.check_max_det(bad)


def kit_options(**changes: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_kit_arguments(parser)
    opt = parser.parse_args([])
    for key, value in changes.items():
        setattr(opt, key, value)
    return opt


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, r"--batch-size must be a positive number of images, got 0"),
        ({"eval_curves": -1}, r"--eval-curves must be 0 .* or more, got -1"),
        ({"eval_steps": 0}, r"--eval-steps must be a positive number of steps, got 0"),
        ({"target_layers": "1,,2"}, r"empty entry"),
        ({"max_image_pixels": -5}, r"--max-image-pixels must be a positive whole number of pixels, got -5"),
        ({"max_image_bytes": 0}, r"--max-image-bytes must be a positive whole number of bytes, got 0"),
        ({"dist_timeout": float("nan")}, r"--dist-timeout must be a number of minutes above 0 .*, got nan"),
    ],
)
def test_kit_arguments_are_checked(changes: dict[str, object], message: str) -> None:
    cli.check_kit_arguments(kit_options())  # the defaults pass
    cli.check_kit_arguments(kit_options(eval_curves=0, eval_steps=1, batch_size=8))
    with pytest.raises(options.ArgumentError, match=message):
        cli.check_kit_arguments(kit_options(**changes))


def test_output_folder_that_is_a_file_or_under_one_is_refused(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert (
        cli.check_output_folder(runs / "cam" / "exp", flag="--project", exist_ok=False)
        == runs / "cam" / "exp"
    )
    runs.write_text("")
    for path in (runs, runs / "cam" / "exp"):
        with pytest.raises(
            options.ArgumentError, match=rf"--project: {re.escape(str(runs))} is a file, not a folder"
        ):
            cli.check_output_folder(path, flag="--project", exist_ok=True)
    assert not (tmp_path / "runs").is_dir()  # nothing was made


def test_paths_the_filesystem_refuses_are_refusals_not_bugs(tmp_path: Path) -> None:
    """A name too long, a path through a file, a loop of links: exit 2 naming the flag (was exit 3)."""
    (tmp_path / "file").write_text("")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for path in (tmp_path / ("x" * 300), tmp_path / "file" / "x" / ("y" * 300)):
        for resume in (False, True):
            refused = r"^--(project|resume): .*(cannot be used|is a file|no run folder)"
            with pytest.raises(KitError, match=refused):
                cli.check_output_folder(path, flag="--project", exist_ok=True, resume=resume)
    with pytest.raises(
        errors.SourceNotFoundError, match="cannot be listed: File name too long; pass an image"
    ):
        kit.api.list_images(str(tmp_path / ("x" * 300)))
    with pytest.raises(errors.SourceNotFoundError) as info:  # the kit's own refusal, as it was
        kit.api.list_images([str(tmp_path / "loop" / "a.png")])
    assert str(info.value).count("does not exist") == 1 and "cannot be listed" not in str(info.value)


def test_output_folder_that_cannot_be_written_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked, free = tmp_path / "locked", tmp_path / "free"
    locked.mkdir()
    (free / "exp").mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    with pytest.raises(options.ArgumentError, match=rf"--output: cannot write into {re.escape(str(locked))}"):
        cli.check_output_folder(locked / "a" / "b", flag="--output", exist_ok=False)
    with pytest.raises(options.ArgumentError, match="cannot write into"):  # --exist-ok writes into it
        cli.check_output_folder(locked, flag="--output", exist_ok=True)
    cli.check_output_folder(locked, flag="--output", exist_ok=False)  # a new sibling locked2 instead
    cli.check_output_folder(free / "exp", flag="--output", exist_ok=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(options.ArgumentError, match="permission denied"):
        cli.check_output_folder(locked / "exp", flag="--project", exist_ok=False)


# ---- checkpoints of another kind ----------------------------------------------------------------


class Model(nn.Module):  # stands for the upstream's models.yolo.Model
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 4, 1))


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        (
            Model().state_dict(),
            r"holds a raw state_dict \(2 tensors, e.g. 'model.0.weight'\), not a checkpoint",
        ),
        (
            {"model": Model().state_dict()},
            r"its 'model' holds a raw state_dict .*not a YOLO model \(.*Model\)",
        ),
        (nn.Linear(2, 2), r"holds a lone torch.nn.modules.linear.Linear module, not a checkpoint"),
        ({"model": nn.Linear(2, 2)}, r"its 'model' holds a lone torch.nn.modules.linear.Linear module"),
        ({"ema": nn.Linear(2, 2), "model": Model()}, r"its 'ema' holds a lone .*Linear module"),
        (
            {"epoch": 3, "optimizer": None},
            r"holds a dict with keys 'epoch', 'optimizer' but no 'model' or 'ema'",
        ),
        ({}, r"holds an empty dict but no 'model'"),
        (Model(), r"holds a bare Model object, not a checkpoint.*torch.save\(\{'model': model\}"),
        ([1, 2], r"holds a builtins.list, not a checkpoint"),
        (torch.zeros(2, 3), r"holds a single tensor of shape \(2, 3\)"),
    ],
)
def test_yolo_checkpoint_of_another_kind_is_named(checkpoint: object, message: str) -> None:
    check = checkpoints.yolo_checkpoint_check(Model)
    with pytest.raises(CheckpointError, match=message) as caught:
        check(checkpoint, Path("w/best.pt"))
    text = str(caught.value)
    assert (
        text.startswith("w/best.pt") and "pass a checkpoint written by train.py (a dict with 'model')" in text
    )


def test_yolo_checkpoints_as_train_py_writes_them_pass() -> None:
    check = checkpoints.yolo_checkpoint_check(Model)
    check({"model": Model().half(), "ema": None, "optimizer": None, "epoch": -1}, Path("a.pt"))
    check({"model": None, "ema": Model()}, Path("a.pt"))  # attempt_load takes the EMA when set


def test_checkpoint_loader_validates_what_it_loaded(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save(dict(Model().state_dict()), path)
    load = checkpoints.checkpoint_loader(allowed_modules=("torch.nn",), trust=False)
    assert set(load(str(path), "cpu")) == {"model.0.weight", "model.0.bias"}  # no validate: as loaded
    load = checkpoints.checkpoint_loader(
        allowed_modules=("torch.nn",), trust=False, validate=checkpoints.yolo_checkpoint_check(Model)
    )
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))} holds a raw state_dict"):
        load(str(path), "cpu")


# ---- exit codes ---------------------------------------------------------------------------------


def test_guarded_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.guarded(lambda: 0) == 0
    assert cli.guarded(lambda: 1) == 1  # some images failed: explain_sources says so

    def refused() -> int:
        raise options.ArgumentError("--img-size must be a positive number of pixels, got 0")

    assert cli.guarded(refused) == 2
    assert capsys.readouterr().err == "error: --img-size must be a positive number of pixels, got 0\n"

    def bug() -> int:
        raise ZeroDivisionError("division by zero")

    assert cli.guarded(bug) == 3  # never 1, which means "some images failed"
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert err.rstrip().splitlines()[-1].startswith("internal error (exit 3)") and "report" in err

    def argparse_error() -> int:
        raise SystemExit(2)

    with pytest.raises(SystemExit):  # argparse's own exit 2 passes through
        cli.guarded(argparse_error)


def test_guarded_ctrl_c_says_where_the_partial_results_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(out_dir: Path | None) -> int:
        if out_dir is None:
            raise KeyboardInterrupt
        raise errors.RunInterrupted(out_dir)

    assert cli.guarded(lambda: interrupted(None)) == 130
    assert capsys.readouterr().err == "interrupted before any image was explained; nothing was written\n"
    run = tmp_path / "exp"
    run.mkdir()
    assert cli.guarded(lambda: interrupted(run)) == 130
    assert capsys.readouterr().err == f"interrupted: no image was finished; nothing written to {run}\n"
    (run / "manifest.json").write_text(json.dumps({"images": [{"file": "a.jpg"}, {"file": "b.jpg"}]}))
    assert cli.guarded(lambda: interrupted(run)) == 130
    assert capsys.readouterr().err == f"interrupted: partial results in {run} (manifest is valid: 2 images)\n"
    (run / "manifest.json").write_text('{"images": [')
    assert cli.guarded(lambda: interrupted(run)) == 130
    err = capsys.readouterr().err
    assert err == f"interrupted: partial results in {run} (its manifest.json could not be read)\n"


def test_trust_checkpoint_help_says_the_code_will_run() -> None:
    parser = argparse.ArgumentParser()
    cli.add_kit_arguments(parser)
    (action,) = [a for a in parser._actions if "--trust-checkpoint" in a.option_strings]
    assert action.help is not None and "WILL RUN" in action.help and "trust" in action.help


# ---- every entry point checks its arguments before it imports the upstream -----------------------

ENTRYPOINTS = Path(__file__).resolve().parents[4] / "entrypoints"
UPSTREAM_PACKAGES = ("models", "detectron2")  # what loading a model would import first


def load_entrypoint(name: str) -> ModuleType:
    path = ENTRYPOINTS / f"{name}_main_gradcam.py"
    spec = importlib.util.spec_from_file_location(f"{name}_main_gradcam", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved  # the entry point puts its own folder first (the checkout, once installed)
    return module


COMMON_BAD = [
    (["--target-layers", "-1"], "layer -1 is negative"),
    (["--target-layers", ","], "--target-layers ',' has an empty entry"),
    (["--target-layers", "102,,103"], "'102,,103' has an empty entry"),
    (["--target-layers", "102,103,102"], "names 102 more than once"),
    (["--max-det", "-1"], "--max-det must be at least 1 (the most detections explained per image), got -1"),
    (["--max-det", "0"], "--max-det must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be a positive number of images, got 0"),
    (["--eval-curves", "-2"], "--eval-curves must be 0 (no deletion/insertion curves) or more, got -2"),
    (["--eval-steps", "0"], "--eval-steps must be a positive number of steps, got 0"),
    (["--max-image-pixels", "0"], "--max-image-pixels must be a positive whole number of pixels, got 0"),
    (["--max-image-bytes", "-1"], "--max-image-bytes must be a positive whole number of bytes, got -1"),
]
BAD_ARGUMENTS = {
    "yolov7": [
        *COMMON_BAD,
        (["--img-size", "0"], "--img-size must be a positive number of pixels, got 0"),
        (["--img-size", "-1"], "--img-size must be a positive number of pixels, got -1"),
        (["--conf-thres", "1.5"], "--conf-thres must be between 0 and 1, got 1.5"),
        (["--iou-thres", "-0.1"], "--iou-thres must be between 0 and 1, got -0.1"),
        (["--conf-thres", "nan"], "--conf-thres must be between 0 and 1, got nan"),
        (["--project", "{file}"], "--project: {file} is a file, not a folder"),
        (["--project", "{file}/runs"], "--project: {file} is a file, not a folder"),
    ],
    "yolov3": [
        *COMMON_BAD,
        (["--imgsz", "0"], "--imgsz must be a positive number of pixels, got 0"),
        (["--imgsz", "320", "-5"], "--imgsz must be a positive number of pixels, got -5"),
        (["--conf-thres", "2"], "--conf-thres must be between 0 and 1, got 2.0"),
        (["--iou-thres", "1.01"], "--iou-thres must be between 0 and 1, got 1.01"),
        (["--project", "{file}"], "--project: {file} is a file, not a folder"),
        (["--name", "exp", "--project", "{file}/x"], "--project: {file} is a file"),
    ],
    "yolov5": [
        *COMMON_BAD,
        (["--imgsz", "0"], "--imgsz must be a positive number of pixels, got 0"),
        (["--img", "320", "-5"], "--imgsz must be a positive number of pixels, got -5"),
        (["--conf-thres", "-0.5"], "--conf-thres must be between 0 and 1, got -0.5"),
        (["--iou-thres", "inf"], "--iou-thres must be between 0 and 1, got inf"),
        (["--max-det", "0"], "--max-det must be at least 1"),
        (["--project", "{file}"], "--project: {file} is a file, not a folder"),
    ],
    "detectron2": [
        *COMMON_BAD,
        (["--confidence-threshold", "1.5"], "--confidence-threshold must be between 0 and 1, got 1.5"),
        (["--confidence-threshold", "-0.5"], "--confidence-threshold must be between 0 and 1, got -0.5"),
        (["--output", "{file}"], "--output: {file} is a file, not a folder"),
        (["--opts", "MODEL.DEVICE"], "--opts takes KEY VALUE pairs"),
    ],
}


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [(name, args, message) for name, cases in BAD_ARGUMENTS.items() for args, message in cases],
)
def test_entry_points_refuse_bad_arguments_before_loading(
    name: str,
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    weights, image, file = tmp_path / "w.pt", tmp_path / "a.jpg", tmp_path / "taken"
    for path in (weights, image, file):
        path.write_bytes(b"x")
    args = [a.format(file=file) for a in args]
    base = (
        ["--input", str(image)]
        if name == "detectron2"
        else ["--weights", str(weights), "--source", str(image)]
    )
    for package in UPSTREAM_PACKAGES:
        monkeypatch.delitem(sys.modules, package, raising=False)
    main = load_entrypoint(name).main
    # Without the check the entry point would go on to import the upstream (absent here): exit 3.
    assert cli.guarded(lambda: main([*base, *args])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(file=file) in err, err
    assert len(err.strip().splitlines()) == 1
    assert not [p for p in UPSTREAM_PACKAGES if p in sys.modules]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "taken", "w.pt"]  # no run folder made


def test_weights_demo_is_the_demo_detector_unless_a_file_is_named_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kit.upstreams.loaders.yolo import wants_demo

    monkeypatch.chdir(tmp_path)
    assert wants_demo(["demo"])
    (tmp_path / "demo").mkdir()  # a project's demo/ folder is not a checkpoint
    assert wants_demo(["demo"])
    assert not wants_demo(["demo", "other.pt"]) and not wants_demo(["demo.pt"])
    (tmp_path / "demo").rmdir()
    (tmp_path / "demo").write_bytes(b"")  # a file named demo is what the user means
    assert not wants_demo(["demo"])


class OneLayerAdapter:  # just enough of kit.run.runner.Adapter for Explainer.run to start a run
    names = ["thing"]
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.layer = nn.Identity()

    def default_layers(self) -> list[str]:
        return ["0"]

    def resolve_layers(self, names: list[str]) -> dict[str, nn.Module]:
        return {name: self.layer for name in names}


def test_ctrl_c_during_a_run_names_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"")

    def interrupted_run(adapter: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(kit.api, "run", interrupted_run)
    out = tmp_path / "exp"
    explainer = kit.api.Explainer(Loaded(adapter=OneLayerAdapter(), weights="w.pt"), upstream="test")  # type: ignore[arg-type]

    def main() -> int:
        return cli.explain_sources(explainer, opt=kit_options(), source=str(image), out_dir=out)

    with pytest.raises(errors.RunInterrupted) as caught:
        main()
    assert caught.value.out_dir == out
    assert cli.guarded(main) == 130
    assert capsys.readouterr().err.startswith("interrupted: ")
    # two layers that are one module are refused before the run
    with pytest.raises(options.ArgumentError, match="0 and model.0 are the same module"):
        cli.explain_sources(
            explainer, opt=kit_options(target_layers="0,model.0"), source=str(image), out_dir=out
        )


def test_audit_after_a_run_prints_the_table_and_writes_audit_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), picture(0))
    out = tmp_path / "exp"
    code = cli.explain_sources(toy_explainer(), opt=kit_options(audit=True), source=str(image), out_dir=out)
    assert code == 0
    written = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    detections = sum(len(i["detections"]) for i in manifest["images"])
    assert detections == 1 and sum(c["n"] for c in written["classes"]) == detections
    assert capsys.readouterr().out.startswith(f"audit of {out}: 1 images, 1 detections")
    # without --audit there is none
    cli.explain_sources(toy_explainer(), opt=kit_options(), source=str(image), out_dir=tmp_path / "exp2")
    assert not (tmp_path / "exp2" / "audit.json").exists()
