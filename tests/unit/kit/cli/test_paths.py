"""kit.cli.paths: every path flag is read from where the user typed the command (make cam's
KIT_CALLER_CWD), a missing source or label folder is refused before the model loads, naming the
folder looked in."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.cli import entry, paths
from kit.core.errors import ArgumentError, SourceNotFoundError
from kit.upstreams.registry import get_spec


@pytest.fixture(name="typed_in")
def typed_in_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user typed `make cam` in `typed`; the entry point runs in `checkout`."""
    typed, checkout = tmp_path / "typed", tmp_path / "checkout"
    typed.mkdir()
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    monkeypatch.setenv(paths.CALLER_CWD_ENV, str(typed))
    return typed


def test_yolo_path_flags_are_read_from_where_the_user_typed(typed_in: Path) -> None:
    spec = get_spec("yolov5")  # detect.py with --data
    assert spec.entry is not None
    (typed_in / "best.pt").write_bytes(b"x")
    argv = [
        "--weights",
        "best.pt",
        "demo",
        "runs/w.pt",
        "--source",
        "data/demo/sample/images",
        "--eval",
        "data/labels",
    ]
    argv += ["--project", "runs/mine", "--data", "/abs/data.yaml"]
    opt = entry.parse_yolo(spec, spec.entry, argv)
    assert opt.source == str(typed_in / "data/demo/sample/images")
    assert opt.eval == str(typed_in / "data/labels")
    assert opt.project == str(typed_in / "runs/mine")
    assert opt.data == "/abs/data.yaml"  # absolute: as typed
    # a file there, a name the loader knows, and a path (missing: the loader's error names where)
    assert opt.weights == [str(typed_in / "best.pt"), "demo", str(typed_in / "runs/w.pt")]
    # what the user did not type keeps the entry point's default (read in the checkout)
    assert entry.parse_yolo(spec, spec.entry, []).source == spec.images


def test_predict_style_and_detectron2_paths_too(typed_in: Path) -> None:
    spec = get_spec("ultralytics")
    assert spec.entry is not None
    opt = entry.parse_predict(spec, spec.entry, ["source=imgs", "project=out", "--eval", "lab.json"])
    expected = tuple(str(typed_in / p) for p in ("imgs", "out", "lab.json"))
    assert (opt.source, opt.project, opt.eval) == expected
    opt = entry.parse_detectron2(["--input", "a.jpg", "b/*.png", "--output", "o", "--config-file", "c.yaml"])
    assert opt.input == [str(typed_in / "a.jpg"), str(typed_in / "b/*.png")]
    assert (opt.output, opt.config_file) == (str(typed_in / "o"), str(typed_in / "c.yaml"))


def test_without_the_variable_paths_stay_as_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.CALLER_CWD_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    spec = get_spec("yolov7")
    assert spec.entry is not None
    opt = entry.parse_yolo(spec, spec.entry, ["--source", "imgs", "--eval", "labels"])
    assert (opt.source, opt.eval) == ("imgs", "labels")


@pytest.mark.parametrize("value", ["relative/folder", "/no/such/folder/anywhere"])
def test_a_bad_caller_folder_is_refused_naming_the_variable(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.CALLER_CWD_ENV, value)
    with pytest.raises(ArgumentError, match=f"{paths.CALLER_CWD_ENV}='{value}' is not an existing absolute"):
        paths.caller_cwd()


def test_a_missing_source_names_the_flag_and_the_folder_looked_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceNotFoundError) as info:
        paths.check_sources("pics", flag="--source")
    assert str(info.value).startswith("--source: image source 'pics' does not exist")
    assert f"(looked in {tmp_path})" in str(info.value)
    with pytest.raises(SourceNotFoundError) as info:
        paths.check_sources([str(tmp_path)], flag="--input")  # a folder without images
    assert "--input: image folder" in str(info.value) and "looked in" not in str(info.value)


def test_the_demo_training_images_point_at_the_readme_sample(tmp_path: Path) -> None:
    missing = tmp_path / "data" / "demo" / "images"
    with pytest.raises(SourceNotFoundError) as info:
        paths.check_sources(str(missing), flag="--source")
    text = str(info.value)
    assert "made by `make demo`" in text
    assert f"the README's sample images are {tmp_path / 'data/demo/sample/images'}" in text
    assert "(`make cam` without network writes it)" in text
    (tmp_path / "data" / "demo" / "sample" / "images").mkdir(parents=True)
    with pytest.raises(SourceNotFoundError) as info:
        paths.check_sources(str(missing), flag="--source")
    assert "without network writes it" not in str(info.value)


def test_missing_labels_are_refused_naming_the_folder_looked_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    paths.check_labels(None)
    (tmp_path / "labels").mkdir()
    paths.check_labels("labels")
    looked = rf"--eval data/x: no such file or folder \(looked in {tmp_path}\)"
    with pytest.raises(ArgumentError, match=looked):
        paths.check_labels("data/x")
