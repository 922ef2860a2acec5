"""Run folder: manifest content, npz maps, error images, duplicate stems, increment_path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kit import journal
from kit.errors import OutputError, ShapeError
from kit.outputs import RunWriter, increment_path
from kit.results import DetectionResult

H, W = 60, 80


def _writer(out: Path, layers: list[str] | None = None, **extra: Any) -> RunWriter:
    return RunWriter(
        out_dir=out,
        upstream="yolov7",
        weights="weights/yolov7.pt",
        method="gradcam",
        target="class_logit",
        layers=layers or ["model.105"],
        extra=extra or None,
    )


def _cam(rows: slice, cols: slice) -> np.ndarray:
    cam = np.zeros((H, W), np.float32)
    cam[rows, cols] = 1.0
    return cam


def _detections() -> list[dict[str, Any]]:
    return [
        {
            "id": 0,
            "box_xyxy": [10.0, 10.0, 30.0, 30.0],
            "class_id": 15,
            "class_name": "cat",
            "score": 0.9,
            "level": 1,
        },
        {
            "id": 1,
            "box_xyxy": [40.0, 20.0, 80.0, 60.0],
            "class_id": 16,
            "class_name": "dog",
            "score": 0.5,
            "level": 2,
        },
    ]


def _results(
    dets: list[dict[str, Any]], maps: dict[tuple[int, str], np.ndarray | None]
) -> list[DetectionResult]:
    """The detections with their maps, as the run loop hands them to the writer."""
    return [
        DetectionResult(
            id=d["id"],
            box_xyxy=tuple(d["box_xyxy"]),
            class_id=d["class_id"],
            class_name=d["class_name"],
            score=d["score"],
            level=d["level"],
            maps={layer: m for (i, layer), m in maps.items() if i == d["id"]},
        )
        for d in dets
    ]


def test_manifest_records_everything_with_relative_paths(tmp_path: Path) -> None:
    out = tmp_path / "run"
    writer = _writer(out, layers=["model.105", "model.75"], kit_version="0.1.0", argv=["--x"])
    maps = {
        (0, "model.105"): _cam(slice(10, 30), slice(10, 30)),  # all mass inside box 0
        (0, "model.75"): _cam(slice(0, 5), slice(0, 5)),  # all outside
        (1, "model.105"): _cam(slice(20, 40), slice(20, 60)),  # half inside box 1 (cols 40..59 of 20..59)
        (1, "model.75"): None,  # no gradient reached this layer
    }
    image = np.full((H, W, 3), 90, np.uint8)
    record = writer.write_image(
        source=tmp_path / "img.jpg", image_bgr=image, detections=_results(_detections(), maps)
    )
    assert writer.finish() == out / "manifest.json"

    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest[k] for k in ("upstream", "weights", "method", "target", "layers")} == {
        "upstream": "yolov7",
        "weights": "weights/yolov7.pt",
        "method": "gradcam",
        "target": "class_logit",
        "layers": ["model.105", "model.75"],
    }
    assert manifest["kit_version"] == "0.1.0" and manifest["argv"] == ["--x"]
    (entry,) = manifest["images"]
    assert entry["file"] == str(tmp_path / "img.jpg") and (entry["width"], entry["height"]) == (W, H)
    assert entry["error"] is None and entry["summary"] == "img_summary.jpg"
    assert entry["maps_file"] == "maps/img.npz"
    d0, d1 = entry["detections"]
    assert {k: d0[k] for k in ("id", "box_xyxy", "class_id", "class_name", "score", "level")} == {
        "id": 0,
        "box_xyxy": [10.0, 10.0, 30.0, 30.0],
        "class_id": 15,
        "class_name": "cat",
        "score": 0.9,
        "level": 1,
    }
    assert d0["maps"]["model.105"] == {
        "overlay": "img/det0_model.105.jpg",
        "energy_in_box": 1.0,
        "no_gradient": False,
        "key": "det0_model.105",
    }
    assert d0["maps"]["model.75"]["energy_in_box"] == 0.0
    assert d1["maps"]["model.105"]["energy_in_box"] == 0.5
    assert d1["maps"]["model.75"] == {
        "overlay": None,
        "energy_in_box": None,
        "no_gradient": True,
        "key": None,
    }
    for rel in (
        "img/det0_model.105.jpg",
        "img/det0_model.75.jpg",
        "img/det1_model.105.jpg",
        "img_summary.jpg",
    ):
        assert cv2.imread(str(out / rel)) is not None, rel
    assert cv2.imread(str(out / "img/det0_model.105.jpg")).shape == (H, W, 3)
    assert record.detections[1].maps[1].no_gradient
    assert not list(out.rglob("*.tmp"))


def test_npz_holds_float16_maps_per_detection_and_layer(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    cam = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    maps = {(0, "model.105"): cam, (1, "model.105"): None}
    writer.write_image(
        source=Path("a.jpg"),
        image_bgr=np.zeros((H, W, 3), np.uint8),
        detections=_results(_detections(), maps),
    )
    with np.load(tmp_path / "maps" / "a.npz") as data:
        assert sorted(data.files) == ["det0_model.105"]
        assert data["det0_model.105"].dtype == np.float16
        np.testing.assert_allclose(data["det0_model.105"], cam, atol=1e-3)


def test_images_without_detections_and_failed_images(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    writer.write_image(source="empty.jpg", image_bgr=np.zeros((H, W, 3), np.uint8), detections=[])
    writer.add_error(Path("notes.txt"), "cannot read image 'notes.txt': OpenCV cannot decode it")
    assert writer.failed == 1
    manifest = json.loads(writer.finish().read_text())
    ok, bad = manifest["images"]
    assert ok["detections"] == [] and ok["maps_file"] is None and (tmp_path / ok["summary"]).is_file()
    assert bad == {
        "file": "notes.txt",
        "width": None,
        "height": None,
        "detections": [],
        "error": "cannot read image 'notes.txt': OpenCV cannot decode it",
        "summary": None,
        "maps_file": None,
    }


def test_every_image_is_recorded_at_once_and_the_manifest_is_valid_from_the_start(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["images"] == []  # even before any image
    writer.add_error("x.jpg", "boom")
    (part,) = journal.part_files(tmp_path)  # one fsync'd line per image, no finish() needed
    assert [e.record["file"] for e in journal.read_part(part).entries] == ["x.jpg"]
    assert [i["file"] for i in journal.read_manifest(tmp_path)["images"]] == ["x.jpg"]
    manifest = json.loads(writer.finish().read_text())
    assert [i["file"] for i in manifest["images"]] == ["x.jpg"] and manifest["finished"] is True
    assert not journal.parts_dir(tmp_path).exists()  # merged, then removed


def test_same_stems_do_not_overwrite_each_other(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    dets = _detections()[:1]
    stems = []
    for name in ("a.jpg", "a.png", "other/A.jpg", "maps.jpg"):
        image = np.full((H, W, 3), len(stems) * 50, np.uint8)
        cam = {(0, "model.105"): _cam(slice(0, 10), slice(0, 10))}
        record = writer.write_image(source=name, image_bgr=image, detections=_results(dets, cam))
        stems.append(record.summary)
    assert stems == ["a_summary.jpg", "a_2_summary.jpg", "A_3_summary.jpg", "maps_2_summary.jpg"]
    assert (tmp_path / "a_2" / "det0_model.105.jpg").is_file() and (tmp_path / "maps" / "a_2.npz").is_file()
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [
        "A_3.npz",
        "a.npz",
        "a_2.npz",
        "maps_2.npz",
    ]


def test_layer_names_become_safe_unique_file_names(tmp_path: Path) -> None:
    writer = _writer(tmp_path, layers=["backbone/res4", "backbone_res4"])
    maps = {
        (0, "backbone/res4"): _cam(slice(0, 9), slice(0, 9)),
        (0, "backbone_res4"): _cam(slice(0, 9), slice(0, 9)),
    }
    record = writer.write_image(
        source="a.jpg", image_bgr=np.zeros((H, W, 3), np.uint8), detections=_results(_detections()[:1], maps)
    )
    assert [m.overlay for m in record.detections[0].maps] == [
        "a/det0_backbone_res4.jpg",
        "a/det0_backbone_res4_2.jpg",
    ]


def test_bad_inputs_are_reported(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    image = np.zeros((H, W, 3), np.uint8)
    with pytest.raises(
        ShapeError, match=r"map 'model.105' of detection 0 of a.jpg is \(10, 10\).*to_original"
    ):
        writer.write_image(
            source="a.jpg",
            image_bgr=image,
            detections=_results(_detections(), {(0, "model.105"): np.zeros((10, 10))}),
        )
    twice = _results(_detections()[:1], {}) * 2
    with pytest.raises(OutputError, match=r"detection ids of b.jpg are not unique: \[0, 0\]"):
        writer.write_image(source="b.jpg", image_bgr=image, detections=twice)
    assert not list(tmp_path.glob("a*")) and not list(tmp_path.glob("b*"))  # refused before any file
    with pytest.raises(OutputError, match=r"\['images', 'method'\]"):
        _writer(tmp_path / "x", method="oops", images=[])


def test_increment_path(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    assert increment_path(exp) == exp  # free
    exp.mkdir()
    assert increment_path(exp) == tmp_path / "exp2"
    assert increment_path(exp, exist_ok=True) == exp
    (tmp_path / "exp7").mkdir()
    (tmp_path / "expert").mkdir()  # not a numbered sibling
    assert increment_path(exp) == tmp_path / "exp8"
    assert increment_path(exp, sep="_") == tmp_path / "exp_2"
    (tmp_path / "log.txt").write_text("")
    assert increment_path(tmp_path / "log.txt") == tmp_path / "log2.txt"


def test_layer_file_names_are_bounded_and_unique_case_insensitively(tmp_path: Path) -> None:
    long = "backbone." + "stage" * 30
    writer = _writer(tmp_path, layers=[long, "Head", "head"])
    cam = _cam(slice(0, 9), slice(0, 9))
    record = writer.write_image(
        source="a.jpg",
        image_bgr=np.zeros((H, W, 3), np.uint8),
        detections=_results(_detections()[:1], {(0, long): cam, (0, "Head"): cam, (0, "head"): cam}),
    )
    first, upper, lower = (m.overlay for m in record.detections[0].maps)
    assert first is not None and first.startswith("a/det0_backbone.stagestage")
    assert re.fullmatch(r"a/det0_backbone\.[stage]{42}-[0-9a-f]{8}\.jpg", first), first  # 60 in all
    assert len(Path(first).stem) <= len("det0_") + 60
    assert (upper, lower) == ("a/det0_Head.jpg", "a/det0_head_2.jpg")  # one file each on any file system
    assert len(list((tmp_path / "a").iterdir())) == 3


def test_a_large_image_gets_its_pictures_at_the_maps_bounded_size(tmp_path: Path) -> None:
    """A 3000 x 2000 image with maps at 2048 x 1365 (kit.maps.map_size): overlays drawn at that size
    with the box scaled, energy_in_box measured against the box in the map's pixels, the npz at the
    maps' size, a missed object's overlay alike; boxes stay in the image's pixels."""
    from kit.maps import map_size
    from kit.results import MissedResult

    h, w = 2000, 3000
    mh, mw = map_size((h, w))
    assert (mh, mw) == (1365, 2048)
    cam = np.zeros((mh, mw), np.float32)
    cam[341:682, 682:1366] = 1.0  # the box (1000, 500, 2000, 1000) in the map's pixels, and nothing else
    box = (1000.0, 500.0, 2000.0, 1000.0)
    det = DetectionResult(
        id=0, box_xyxy=box, class_id=1, class_name="dog", score=0.8, level=0, maps={"l": cam}
    )
    missed = MissedResult(
        id=0, gt_box_xyxy=box, class_id=1, class_name="dog", box_xyxy=(0.0, 0.0, 300.0, 300.0),
        score=0.1, iou=0.0, why="below_threshold", level=0, maps={"l": cam},
    )  # fmt: skip
    image = np.full((h, w, 3), 90, np.uint8)
    writer = _writer(tmp_path, layers=["l"])
    record = writer.write_image(source="big.jpg", image_bgr=image, detections=[det], missed=[missed])
    writer.finish()
    entry = json.loads((tmp_path / "manifest.json").read_text())["images"][0]
    assert (entry["width"], entry["height"]) == (w, h) and entry["detections"][0]["box_xyxy"] == list(box)
    assert entry["detections"][0]["maps"]["l"]["energy_in_box"] == 1.0
    assert entry["missed"][0]["candidate"]["maps"]["l"]["energy_in_box"] == 1.0  # on the object's box
    overlay = cv2.imread(str(tmp_path / record.detections[0].maps[0].overlay))
    assert overlay.shape == (mh, mw, 3)
    # the heat lies where the box is: JET's red (0, 0, 128) blended half over grey 90 inside (red 109),
    # JET's blue (128, 0, 0) outside (red 45); (500, 1000) in the map is (732, 1465) in the image
    assert overlay[500, 1000, 2] > 95 and overlay[100, 100, 2] < 60
    assert cv2.imread(str(tmp_path / "big" / "missed0_l.jpg")).shape == (mh, mw, 3)
    with np.load(tmp_path / entry["maps_file"]) as arrays:
        assert arrays["det0_l"].shape == arrays["missed0_l"].shape == (mh, mw)
    sheet = cv2.imread(str(tmp_path / entry["summary"]))
    assert sheet is not None and sheet.shape[1] <= 2 * 480 + 4


def test_a_map_of_neither_the_image_size_nor_its_bounded_size_is_refused(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    image = np.zeros((2000, 3000, 3), np.uint8)
    wrong = _results(_detections()[:1], {(0, "model.105"): np.zeros((1000, 1500), np.float32)})
    with pytest.raises(ShapeError, match=r"expected the original size \(2000, 3000\) or its bounded size "):
        writer.write_image(source="a.jpg", image_bgr=image, detections=wrong)


def test_the_npz_and_summary_are_those_of_savez_and_of_a_full_size_summary(tmp_path: Path) -> None:
    """The maps are written to the npz one by one and a summary tile's map is shrunk as soon as it is
    made (no float16 copy, no full-size fused map of every detection held at once): the npz holds
    exactly ``cam.astype(float16)`` and the sheet is exactly the one drawn from full-size maps."""
    from kit.maps import normalize
    from kit.render import summary

    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    cams = {(i, "model.105"): rng.random((H, W), dtype=np.float32) for i in (0, 1)}
    dets = _results(_detections(), cams)
    writer = _writer(tmp_path)
    record = writer.write_image(source=Path("a.jpg"), image_bgr=image, detections=dets)
    with np.load(tmp_path / "maps" / "a.npz", allow_pickle=False) as data:
        assert sorted(data.files) == ["det0_model.105", "det1_model.105"]
        for i in (0, 1):
            np.testing.assert_array_equal(
                data[f"det{i}_model.105"], cams[(i, "model.105")].astype(np.float16)
            )
    tiles = [(normalize(cams[(d.id, "model.105")]), list(d.box_xyxy), d.label()) for d in dets]
    ok, expected = cv2.imencode(".jpg", summary(image, tiles=tiles), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok and (tmp_path / str(record.summary)).read_bytes() == expected.tobytes()
