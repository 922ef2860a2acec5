"""kit.load and Explainer without a checkout: the toy detector of conftest.py through the facade."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import kit
from kit.api import RunResult
from kit.core.images import ImageLimits
from kit.core.options import ArgumentError
from kit.core.results import FUSED, DetectionResult, ImageResult, NoMapError
from kit.upstreams.loaders import CheckoutError, find_checkout
from tests.conftest import picture
from tests.conftest import toy_explainer as toy


def test_the_public_names_are_listed_and_import_on_first_use() -> None:
    assert sorted(kit.__all__) == [
        "DetectionResult",
        "ExplainRequest",
        "Explainer",
        "ImageResult",
        "KitError",
        "RunResult",
        "load",
    ]
    assert kit.load is kit.api.load and kit.ImageResult is ImageResult and kit.RunResult is RunResult
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        kit.nothing  # noqa: B018


def test_explain_gives_typed_results_in_the_images_pixels(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), picture(0))
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    results = toy().explain([path, picture(1, (30, 20)), notes], fuse=True)
    first, second, missing = results
    assert (
        isinstance(first, ImageResult) and first.file == str(path) and (first.width, first.height) == (40, 24)
    )
    assert second.file == "array1" and (second.width, second.height) == (20, 30)
    (d,) = first.detections
    assert isinstance(d, DetectionResult) and (d.id, d.class_id, d.class_name, d.level) == (0, 0, "blob", 0)
    assert list(d.maps) == ["feat", FUSED]
    cam = d.maps["feat"]
    assert cam is not None and cam.dtype == np.float32 and cam.shape == (24, 40)
    assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    x1, y1, x2, y2 = d.box_xyxy
    assert 0 <= x1 < x2 <= 40 and 0 <= y1 < y2 <= 24
    assert missing.error is not None and "cannot decode" in missing.error and missing.detections == ()
    picture_ = first.overlay(d, "feat")
    assert picture_.shape == (24, 40, 3) and picture_.dtype == np.uint8
    assert np.array_equal(picture_, first.overlay(0, "feat"))
    with pytest.raises(NoMapError, match="no map at layer 'other'.*it has maps at feat, fused"):
        first.overlay(d, "other")


def test_run_writes_the_run_folder_and_its_overlay_is_the_one_explain_draws(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for k in range(3):
        cv2.imwrite(str(source / f"i{k}.png"), picture(k))
    explainer = toy()
    run = explainer.run(source, tmp_path / "out", batch_size=2)
    assert (run.images, run.failed, run.eval_report) == (3, 0, None)
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")  # the run report, every run
    assert page.count("<article class=detection") == sum(
        len(i["detections"]) for i in json.loads(run.manifest.read_text())["images"]
    )
    manifest = json.loads(run.manifest.read_text())
    assert (manifest["upstream"], manifest["weights"], manifest["img_size"]) == ("toy", "toy.pt", 32)
    assert manifest["layers"] == ["feat"] and [Path(i["file"]).name for i in manifest["images"]] == [
        "i0.png",
        "i1.png",
        "i2.png",
    ]
    entry = manifest["images"][0]["detections"][0]
    (result,) = explainer.explain(source / "i0.png")
    d = result.detections[0]
    assert entry["box_xyxy"] == list(d.box_xyxy) and entry["score"] == d.score
    written = cv2.imread(str(tmp_path / "out" / entry["maps"]["feat"]["overlay"]))
    ok, jpeg = cv2.imencode(".jpg", result.overlay(d, "feat"), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok and np.array_equal(written, cv2.imdecode(jpeg, cv2.IMREAD_COLOR))  # the same picture
    with np.load(tmp_path / "out" / "maps" / "i0.npz") as maps:
        np.testing.assert_allclose(maps["det0_feat"], d.maps["feat"], atol=1e-3)


def test_bad_values_are_refused_before_any_image(tmp_path: Path) -> None:
    explainer = toy()
    with pytest.raises(ArgumentError, match="image 0 is an array of shape \\(4, 4\\) and dtype float64"):
        explainer.explain([np.zeros((4, 4))])
    with pytest.raises(ArgumentError, match="batch_size must be a positive number of images"):
        explainer.explain(picture(0), batch_size=0)
    with pytest.raises(kit.KitError, match="unknown layer 'nope'"):
        explainer.explain(picture(0), layers=["nope"])
    with pytest.raises(ArgumentError, match="more than once"):
        explainer.explain(picture(0), layers=["feat", "feat"])
    with pytest.raises(kit.KitError, match="unknown method .nope.; choose one of"):
        explainer.explain(picture(0), method="nope")
    assert not list(tmp_path.iterdir())


def test_load_names_the_upstreams_options_and_the_checkout_it_expected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(
        ArgumentError, match="unknown upstream 'yolov9'; the kit loads yolov3, yolov5, yolov7, detectron2"
    ):
        kit.load("yolov9", "w.pt")
    with pytest.raises(
        ArgumentError, match="detectron2 takes no option img_size; its options are config_file"
    ):
        kit.load("detectron2", "w.pkl", img_size=640)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KIT_UPSTREAMS_DIR", str(tmp_path / "none"))
    with pytest.raises(
        CheckoutError, match=r"no yolov7 checkout: neither the current folder .* `make setup-yolov7`"
    ):
        kit.load("yolov7", "w.pt")
    with pytest.raises(
        CheckoutError, match=r"is not a yolov3 checkout \(it has no models/yolo.py, .*checkout="
    ):
        kit.load("yolov3", "w.pt", checkout=tmp_path)
    for marker in ("models/yolo.py", "utils/datasets.py", "cfg/training/yolov7.yaml"):
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).write_text("")
    assert find_checkout("yolov7") == tmp_path.resolve()  # the current folder, when it is one
    (tmp_path / "none" / "yolov7").mkdir(parents=True)
    with pytest.raises(CheckoutError, match="is not a yolov7 checkout"):
        find_checkout("yolov7", tmp_path / "none" / "yolov7")


def test_image_limits_refuse_one_image_and_the_others_go_on(tmp_path: Path) -> None:
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    cv2.imwrite(str(small), picture(0, (10, 10)))
    cv2.imwrite(str(large), picture(1, (20, 30)))
    explainer = toy()
    first, second = explainer.explain([small, large], image_limits=ImageLimits(pixels=100))
    assert first.error is None and len(first.detections) == 1
    assert second.error == (
        f"cannot read image '{large}': its header gives 30 x 20 pixels (600), more than the limit of 100 "
        "pixels; it was not decoded. Raise the limit with --max-image-pixels N "
        "(image_limits=ImageLimits(pixels=N) in Python) for an image you trust"
    )
    run = explainer.run(
        [small, large], tmp_path / "out", image_limits=ImageLimits(bytes=large.stat().st_size - 1)
    )
    assert (run.images, run.failed) == (2, 1)
    entries = json.loads(run.manifest.read_text())["images"]
    assert entries[0]["error"] is None
    assert "the file is" in entries[1]["error"] and "--max-image-bytes N" in entries[1]["error"]


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (ImageLimits(pixels=0), "ImageLimits.pixels must be a positive whole number of pixels, got 0"),
        (ImageLimits(bytes=-1), "ImageLimits.bytes must be a positive whole number of bytes, got -1"),
        (1000, "image_limits must be a kit.core.images.ImageLimits"),
    ],
)
def test_bad_image_limits_are_refused_before_any_image(tmp_path: Path, limits: object, message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        toy().explain(picture(0), image_limits=limits)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=message):
        toy().run(picture(0), tmp_path / "out", image_limits=limits)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_a_large_images_maps_are_kept_at_a_bounded_size_and_drawn_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3000 x 2400: maps at 2048 x 1638 (the longer side at kit.core.geometry.MAP_MAX_SIDE), the same heat as
    the full-size map scaled down; boxes, width and height in the image's pixels; the overlay and
    the run folder's pictures at the maps' size, energy_in_box as at full size."""
    import kit.core.geometry

    image = picture(3, (2400, 3000))
    explainer = toy()
    (result,) = explainer.explain(image)
    (d,) = result.detections
    cam = d.maps["feat"]
    assert cam is not None and cam.shape == (1638, 2048) and cam.dtype == np.float32
    assert (result.width, result.height) == (3000, 2400) and d.box_xyxy == (0.0, 0.0, 3000.0, 2400.0)
    assert result.overlay(d, "feat").shape == (1638, 2048, 3)
    monkeypatch.setattr(kit.core.geometry, "MAP_MAX_SIDE", 10**6)  # as before: maps at the image's size
    (full,) = explainer.explain(image)
    full_cam = full.detections[0].maps["feat"]
    assert full_cam is not None and full_cam.shape == (2400, 3000)
    scaled = cv2.resize(full_cam, (2048, 1638), interpolation=cv2.INTER_AREA)
    assert float(np.abs(scaled - cam).max()) < 0.02
    monkeypatch.undo()
    run = explainer.run(image, tmp_path / "out")
    entry = json.loads(run.manifest.read_text())["images"][0]
    assert (entry["width"], entry["height"]) == (3000, 2400)
    written = entry["detections"][0]["maps"]["feat"]
    assert cv2.imread(str(tmp_path / "out" / written["overlay"])).shape == (1638, 2048, 3)
    assert written["energy_in_box"] == 1.0  # the box is the whole image
    with np.load(tmp_path / "out" / entry["maps_file"]) as arrays:
        assert arrays["det0_feat"].shape == (1638, 2048)
