"""ExplainRequest: every run setting checked once, when the request is made, its error naming the
setting as the caller spelled it (the keyword from Python, the flag from the command line); the flag
table that builds every entry point's kit flags; ``python -m kit <command>``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kit.cli import commands, flags
from kit.cli import main as cli
from kit.core.errors import ArgumentError, KitError, MethodNotFoundError
from kit.core.images import ImageLimits
from kit.core.targets import TargetNotSupportedError
from kit.methods.drise import DRise, DRiseSettings
from kit.run.request import EXPLAIN_KEYWORDS, ExplainRequest
from tests.conftest import picture, toy_explainer
from tests.runs import det, energy_map, write_run

# A bad value of each setting: (keywords, what the error says from Python, what it says from the CLI).
BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"batch_size": 0}, "batch_size must be a positive number of images, got 0", "--batch-size must"),
    ({"eval_curves": -1}, "eval_curves must be 0 (no deletion/insertion curves) or more", "--eval-curves"),
    ({"eval_steps": 0}, "eval_steps must be a positive number of steps, got 0", "--eval-steps must"),
    ({"layers": "1,,2"}, "layers '1,,2' has an empty entry", "--target-layers '1,,2' has an empty entry"),
    ({"layers": "-1"}, "layers: layer -1 is negative", "--target-layers: layer -1 is negative"),
    ({"layers": ["a", "a"]}, "layers ['a', 'a'] name a layer more than once", "--target-layers ['a', 'a']"),
    (
        {"target_class": "dog", "target": "box"},
        "target_class goes with a class target (class-logit, class-prob, score), not target box",
        "--target-class goes with a class target (class-logit, class-prob, score), not --target box",
    ),
    ({"dist_timeout": 0}, "dist_timeout must be a number of minutes above 0", "--dist-timeout must"),
    ({"explain_missed": True}, "explain_missed needs the labels", "--explain-missed needs --eval LABELS"),
    (
        {"explain_missed": True, "labels": "l", "target_class": "0"},
        "target_class would explain another",
        "--target-class would explain another",
    ),
    (
        {"image_limits": ImageLimits(pixels=0)},
        "ImageLimits.pixels must be a positive whole number of pixels, got 0",
        "--max-image-pixels must be a positive whole number of pixels, got 0",
    ),
    (
        {"image_limits": ImageLimits(bytes=-1)},
        "ImageLimits.bytes must be a positive whole number of bytes, got -1",
        "--max-image-bytes must be a positive whole number of bytes, got -1",
    ),
    ({"method": "drise", "drise": DRiseSettings(masks=0)}, "DRiseSettings.masks must be 1", "--drise-masks"),
    ({"method": "drise", "drise": DRiseSettings(p=1.0)}, "DRiseSettings.p must be between", "--drise-p must"),
    ({"method": "drise", "layers": "74"}, "layers does not go with D-RISE", "--target-layers does not go"),
    ({"method": "drise", "fuse": True}, "fuse=True fuses the maps", "--fuse fuses the maps"),
    (
        {"method": "drise", "target": "score"},
        "target and target_class do not go",
        "--target and --target-class",
    ),
    ({"overwrite": True, "resume": True}, "overwrite replaces the run in out_dir and resume", "--overwrite"),
]


@pytest.mark.parametrize(("keywords", "python", "flag"), BAD, ids=[str(b[0]) for b in BAD])
def test_a_bad_value_is_named_as_the_caller_spelled_it(
    keywords: dict[str, Any], python: str, flag: str
) -> None:
    with pytest.raises(ArgumentError) as from_python:
        ExplainRequest.from_keywords(keywords)
    assert python in str(from_python.value)
    with pytest.raises(ArgumentError) as from_cli:
        ExplainRequest(**keywords, names=flags.NAMES)
    assert flag in str(from_cli.value)


def test_the_same_bad_values_as_flags_stop_the_entry_point_naming_the_flag() -> None:
    cases = [
        (["--batch-size", "0"], "--batch-size must be a positive number of images, got 0"),
        (["--target-layers", "3,3"], "--target-layers '3,3' names 3 more than once"),
        (["--max-image-pixels", "0"], "--max-image-pixels must be a positive whole number of pixels, got 0"),
        (["--drise-seed", "-1"], "--drise-seed must be 0 or more, got -1"),  # checked whatever the method
        (["--method", "drise", "--fuse"], "--fuse fuses the maps of several layers"),
        (["--eval", "l", "--explain-missed", "--method", "drise"], "--explain-missed explains each missed"),
        (["--overwrite"], "--overwrite replaces the run in the folder --exist-ok writes into"),
    ]
    for argv, message in cases:
        with pytest.raises(ArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
            cli.check_kit_arguments(parsed(argv))


def parsed(argv: list[str], *, exist_ok: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_kit_arguments(parser)
    parser.add_argument("--exist-ok", action="store_true")
    return parser.parse_args([*argv, *(["--exist-ok"] if exist_ok else [])])


def test_unknown_names_keep_their_own_errors() -> None:
    with pytest.raises(MethodNotFoundError, match="unknown method 'nope'; choose one of: drise, "):
        ExplainRequest(method="nope")
    with pytest.raises(TargetNotSupportedError, match="unknown target 'nope'"):
        ExplainRequest(target="nope")


def test_the_keywords_are_the_settings() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument.*labels; the settings are method"):
        ExplainRequest.from_keywords({"labels": "l"}, allowed=EXPLAIN_KEYWORDS)
    with pytest.raises(TypeError, match="unexpected keyword argument.*exist_ok"):  # run writes into out_dir
        ExplainRequest.from_keywords({"exist_ok": False})
    with pytest.raises(ArgumentError, match="drise= holds D-RISE's settings; it goes with method='drise'"):
        ExplainRequest.from_keywords({"drise": DRiseSettings()})
    request = ExplainRequest.from_keywords({"layers": " 74, 75", "image_limits": None})
    assert request.layers == ("74", "75") and request.layer_list == ["74", "75"]
    assert request.image_limits == ImageLimits()
    assert ExplainRequest(layers=[74, 75]).layers == ("74", "75") and ExplainRequest(layers=None).layers == ()
    assert ExplainRequest(method="drise").configured_method().record() == DRise(DRiseSettings()).record()
    assert ExplainRequest(labels="l", eval_curves=3).eval_key == {"labels": "l", "curves": 3, "steps": 16}


def test_the_flag_table_fills_every_setting_with_the_same_defaults() -> None:
    settings = {f.setting.partition(".")[0] for f in flags.FLAGS if f.setting not in (flags.LOAD, flags.CLI)}
    fields = {f.name for f in dataclasses.fields(ExplainRequest)} - {"names", "exist_ok"}
    assert settings == fields
    request = cli.check_kit_arguments(parsed([], exist_ok=True))
    defaults = ExplainRequest(drise=DRiseSettings())  # the command line always has D-RISE's flags
    assert request == defaults
    assert request.names == flags.NAMES and ExplainRequest().names == {}
    assert cli.check_kit_arguments(parsed([])).exist_ok is False


def test_help_lists_every_flag_its_default_and_choices() -> None:
    parser = argparse.ArgumentParser()
    cli.add_kit_arguments(parser)
    text = parser.format_help()
    for flag in flags.FLAGS:
        assert flag.flag in text
        for choice in flag.choices or ():
            assert choice in text
    assert parser.parse_args([]).method is None  # the detector family's, once it is loaded
    assert "gradcampp on yolov3, odam on RetinaNet" in " ".join(text.split())
    assert parser.parse_args([]).drise_masks == DRiseSettings().masks


def test_no_method_named_is_the_detector_familys_default_unless_layers_are_named() -> None:
    assert ExplainRequest().method is None
    assert ExplainRequest().resolved("odam").method == "odam"
    assert ExplainRequest(method="layercam").resolved("odam").method == "layercam"  # named: kept
    assert ExplainRequest(layers="74").resolved("odam").method == "gradcam"  # a CAM's layers
    assert ExplainRequest().configured_method().name == "gradcam"  # checked as Grad-CAM until loaded


def test_the_explainer_uses_its_familys_default_method(tmp_path: Path) -> None:
    from dataclasses import replace

    from kit.api import Explainer

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), picture(0))
    toy = toy_explainer()
    assert toy.default_method == "gradcam"
    plain = toy.explain(path)[0].detections[0].maps
    explainer = Explainer(replace(toy._loaded, default_method="gradcampp"), upstream="toy")
    assert explainer.default_method == "gradcampp"
    chosen = explainer.explain(path)[0].detections[0].maps
    named = explainer.explain(path, method="gradcampp")[0].detections[0].maps
    assert all(np.array_equal(chosen[k], named[k]) for k in named)
    assert any(not np.array_equal(plain[k], chosen[k]) for k in plain)
    out = tmp_path / "run"
    explainer.run(path, out)
    assert json.loads((out / "manifest.json").read_text())["method"] == "gradcampp"  # recorded resolved
    # a family default this model cannot run (ODAM without the head's level layers) is Grad-CAM's
    other = toy_explainer()
    assert Explainer(replace(other._loaded, default_method="odam"), upstream="toy").default_method == "odam"
    other.adapter.capabilities = replace(other.adapter.capabilities, level_layers=None)
    assert (
        Explainer(replace(other._loaded, default_method="odam"), upstream="toy").default_method == "gradcam"
    )
    with pytest.raises(KitError, match="unknown method ''"):
        explainer.explain(path, method="")  # an empty name is refused, not taken for the default
    # the run made with Grad-CAM (the toy's default) does not resume under Grad-CAM++'s default:
    # refused, saying how to go on with it
    toy.run(path, tmp_path / "older")
    with pytest.raises(KitError, match=r"--method gradcam goes on with it"):
        explainer.run(path, tmp_path / "older", resume=True)
    explainer.run(path, tmp_path / "older", resume=True, method="gradcam")


def test_explain_and_run_take_a_request_or_keywords_not_both(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), picture(0))
    explainer = toy_explainer()
    with pytest.raises(TypeError, match="unexpected keyword argument.*labels"):
        explainer.explain(path, labels="x")
    with pytest.raises(TypeError, match="not both"):
        explainer.explain(path, ExplainRequest(), fuse=True)
    with pytest.raises(ArgumentError, match="batch_size must be a positive number of images"):
        explainer.run(path, tmp_path / "out", batch_size=0)
    assert not (tmp_path / "out").exists()  # refused before anything was written
    by_keywords = explainer.explain(path, fuse=True)
    by_request = explainer.explain(path, ExplainRequest(fuse=True))
    assert [d.score for d in by_keywords[0].detections] == [d.score for d in by_request[0].detections]


def test_audit_runs_inside_the_run_and_the_report_is_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), picture(0))
    import kit.api

    written: list[Path] = []
    real = kit.api.write_report

    def counted(out: Path) -> Path:
        assert (Path(out) / "audit.json").is_file()  # the audit is there before the report
        written.append(Path(out))
        return real(out)

    monkeypatch.setattr(kit.api, "write_report", counted)
    result = toy_explainer().run(path, tmp_path / "out", audit=True)
    assert written == [tmp_path / "out"]
    assert result.audit_table is not None and "class" in result.audit_table
    assert json.loads((tmp_path / "out" / "audit.json").read_text(encoding="utf-8"))


def test_python_m_kit_dispatches_to_audit_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run", {"a.jpg": [det(0, 0, 0.9, {"74": energy_map(0.8)})]})
    assert commands.main(["report", str(run)]) == 0
    assert (run / "index.html").is_file()
    assert commands.main(["audit", str(run)]) == 0
    assert (run / "audit.json").is_file()
    assert commands.main(["audit", str(tmp_path / "missing")]) == cli.EXIT_REFUSED
    assert commands.main([]) == commands.EXIT_REFUSED
    assert commands.main(["nope"]) == commands.EXIT_REFUSED
    assert "unknown command 'nope'; choose one of: audit, report" in capsys.readouterr().err
    assert commands.main(["--help"]) == 0


def test_refusals_are_kit_errors() -> None:
    assert issubclass(ArgumentError, KitError) and issubclass(ArgumentError, ValueError)
