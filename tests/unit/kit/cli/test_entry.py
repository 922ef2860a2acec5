"""kit.cli.entry: the ultralytics entry point takes `yolo predict`'s key=value arguments beside
the kit's flags, with the attribute names the YOLO entry points' run reads."""

from __future__ import annotations

import pytest

from kit.cli import entry
from kit.core.errors import ArgumentError
from kit.upstreams.registry import get_spec

SPEC = get_spec("ultralytics")


def parse(argv: list[str]) -> object:
    assert SPEC.entry is not None and SPEC.entry.predict_style
    return entry.parse_predict(SPEC, SPEC.entry, argv)


def test_yolo_predicts_key_value_arguments_fill_the_yolo_run_settings() -> None:
    opt = parse(
        [
            "model=best.pt",
            "source=images",
            "conf=0.3",
            "iou=0.5",
            "imgsz=320,256",
            "device=cpu",
            "max_det=7",
            "classes=[0,2]",
            "agnostic_nms=True",
            "half=False",
            "project=out",
            "name=run",
            "exist_ok=true",
            "nms=False",
            "--method",
            "gradcampp",
        ]
    )
    got = {k: getattr(opt, k) for k in ("weights", "source", "conf_thres", "iou_thres", "imgsz", "device")}
    assert got == {
        "weights": "best.pt",
        "source": "images",
        "conf_thres": 0.3,
        "iou_thres": 0.5,
        "imgsz": [320, 256],
        "device": "cpu",
    }
    assert (opt.max_det, opt.classes, opt.agnostic_nms, opt.half) == (7, [0, 2], True, False)  # type: ignore[attr-defined]
    assert (opt.project, opt.name, opt.exist_ok, opt.nms, opt.method) == (
        "out",
        "run",
        True,
        False,
        "gradcampp",
    )  # type: ignore[attr-defined]


def test_the_defaults_are_yolo_predicts() -> None:
    opt = parse([])
    assert (opt.weights, opt.source, opt.conf_thres, opt.iou_thres, opt.imgsz) == (  # type: ignore[attr-defined]
        "yolo11n.pt",
        "ultralytics/assets",
        0.25,
        0.7,
        None,  # the loader's: 640, as yolo predict's, or the demo detector's own (256)
    )
    assert (opt.max_det, opt.nms, opt.agnostic_nms) == (300, None, False)  # type: ignore[attr-defined]


def test_a_flags_value_with_an_equals_sign_stays_its_value() -> None:
    opt = parse(["--source", "a=b.jpg", "model=x.pt"])
    assert (opt.source, opt.weights) == ("a=b.jpg", "x.pt")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["modle=x.pt"], "unknown argument modle=x.pt; this entry point takes model, source"),
        (["half=yes"], "half=yes: expected half=True or half=False"),
        (["imgsz=1,2,3"], "imgsz takes one or two sizes (h,w), got 3"),
        (["nms=maybe"], "expected True or False, got 'maybe'"),
        (["imgsz=abc"], "imgsz=abc: expected a whole number or a list of them"),
        (["conf=high"], "conf=high: expected a number"),
        (["classes=0,cat"], "classes=0,cat: expected a whole number or a list of them"),
        (["max_det=2.5"], "max_det=2.5: expected a whole number"),
    ],
)
def test_a_bad_argument_stops_the_parser_naming_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_value_is_refused_naming_the_key_as_typed() -> None:
    with pytest.raises(ArgumentError, match="^conf must be"):
        parse(["conf=1.5"])
    with pytest.raises(ArgumentError, match="^max_det must be at least 1"):
        parse(["max_det=0"])
