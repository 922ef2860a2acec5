"""Run folder: manifest content, npz maps, error images, duplicate stems, increment_path."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kit.api import Explainer
from kit.cli import main as cli
from kit.core.detection import Detection, MissedObject, MissedReason
from kit.core.errors import OutputError, ShapeError
from kit.core.results import DetectionResult
from kit.rundir import journal, reader
from kit.rundir.naming import LinkError, increment_path
from kit.rundir.schema import LOCK_NAME
from kit.rundir.writer import RunSettings, RunWriter
from kit.upstreams.loaders import Loaded
from tests.conftest import ToyAdapter, picture, toy_explainer

H, W = 60, 80


def _writer(out: Path, layers: list[str] | None = None, **extra: Any) -> RunWriter:
    return RunWriter(
        RunSettings(
            upstream="yolov7",
            weights="weights/yolov7.pt",
            method="gradcam",
            target="class_logit",
            layers=layers or ["model.105"],
            extra=extra,
        ),
        out_dir=out,
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
            detection=Detection(
                image_index=0,
                box_xyxy=tuple(d["box_xyxy"]),
                class_id=d["class_id"],
                score=d["score"],
                row=d["id"],
                level=d["level"],
            ),
            class_name=d["class_name"],
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
    assert [i["file"] for i in reader.read_manifest(tmp_path)["images"]] == ["x.jpg"]
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


# ---- links: nothing is written, read or removed through a link inside a run folder -------------


def toy_run(*args: str) -> int:
    """tests/toy_main.py in this process, through the entry points' guarded(): its exit code."""
    from tests import toy_main

    return cli.guarded(lambda: toy_main.main(list(args)))


def sources(folder: Path, names: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    folder.mkdir()
    for k, name in enumerate(names):
        cv2.imwrite(str(folder / name), picture(k))
    return folder


def listing(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder`` (links not followed) and what it holds: the sentinel's state."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[rel] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[rel] = path.read_bytes()
        else:
            found[rel] = "folder"
    return found


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("maps", "outside"),  # a folder link where the maps go
        (journal.PARTS_DIR, "outside"),  # where the part files go (and are removed at the end)
        ("a", "outside"),  # an image's own folder (a.png's overlays)
        ("manifest.json", "outside/keep.txt"),  # a file link to a file outside
        ("a_summary.jpg", "outside/missing.jpg"),  # a dangling link
        (LOCK_NAME, "outside/keep.txt"),
        ("index.html", "outside/keep.txt"),
    ],
)
def test_a_link_where_the_kit_writes_is_refused_and_nothing_leaves_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, target: str
) -> None:
    src = sources(tmp_path / "src")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    run = tmp_path / "runs" / "exp"
    run.mkdir(parents=True)
    (run / name).symlink_to(tmp_path / target)
    before, inside = listing(outside), listing(run)
    code = toy_run("--source", str(src), "--project", str(run.parent), "--name", "exp", "--exist-ok")
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{run / name} is a symbolic link" in err and "remove it" in err
    assert listing(outside) == before and listing(run) == inside  # nothing written anywhere
    with pytest.raises(LinkError, match=re.escape(f"{run / name} is a symbolic link")):
        toy_explainer().run(src, run)  # the Python API refuses alike
    assert listing(outside) == before and listing(run) == inside


def test_special_files_where_the_kit_writes_are_refused(tmp_path: Path) -> None:
    """A named pipe would block a reader (the lock, the manifest) forever; a file named like a
    folder of the kit would fail every image."""
    src = sources(tmp_path / "src")
    for name, make in [(LOCK_NAME, os.mkfifo), ("manifest.json", os.mkfifo), ("maps", Path.touch)]:
        run = tmp_path / name.strip(".")
        run.mkdir()
        make(run / name)
        with pytest.raises(LinkError, match=rf"{re.escape(str(run / name))} is a (named pipe|file), where"):
            toy_explainer().run(src, run)
        assert [p.name for p in run.iterdir()] == [name]
    run = tmp_path / "parts"
    (run / journal.PARTS_DIR).mkdir(parents=True)
    os.mkfifo(run / journal.PARTS_DIR / "0001-r0.jsonl")
    with pytest.raises(LinkError, match="is a named pipe"):
        toy_explainer().run(src, run, resume=False)


def test_a_run_folder_that_is_itself_a_link_is_fine(tmp_path: Path) -> None:
    """--project on a shared disk: the folder given may be a link; only links inside it count."""
    src = sources(tmp_path / "src")
    disk = tmp_path / "shared"
    disk.mkdir()
    (tmp_path / "runs").symlink_to(disk)
    code = toy_run("--source", str(src), "--project", str(tmp_path / "runs"), "--name", "exp")
    assert code == 0
    manifest = json.loads((disk / "exp" / "manifest.json").read_text())
    assert manifest["finished"] and [Path(i["file"]).name for i in manifest["images"]] == ["a.png", "b.png"]
    assert (disk / "exp" / "a_summary.jpg").is_file() and (disk / "exp" / "maps" / "a.npz").is_file()


def test_a_link_made_during_the_run_is_not_written_through(tmp_path: Path) -> None:
    """After the check at the start: each write opens its folders without following a link, and
    never replaces a link at its own name."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "det0_model.105.jpg").write_bytes(b"mine")
    writer = _writer(tmp_path / "run")
    maps = {(0, "model.105"): _cam(slice(10, 30), slice(10, 30))}
    (tmp_path / "run" / "img").symlink_to(outside)  # the image's folder, made a link meanwhile
    with pytest.raises(LinkError, match=r"run/img is a symbolic link, where the kit keeps a folder"):
        writer.write_image(
            source="img.jpg",
            image_bgr=np.zeros((H, W, 3), np.uint8),
            detections=_results(_detections()[:1], maps),
        )
    (tmp_path / "run" / "img").unlink()
    (tmp_path / "run" / "img").mkdir()
    (tmp_path / "run" / "img" / "det0_model.105.jpg").symlink_to(outside / "det0_model.105.jpg")
    with pytest.raises(LinkError, match=r"det0_model.105.jpg is a symbolic link, where the kit keeps a file"):
        writer.write_image(
            source="img.jpg",
            image_bgr=np.zeros((H, W, 3), np.uint8),
            detections=_results(_detections()[:1], maps),
        )
    assert listing(outside) == {"det0_model.105.jpg": b"mine"}
    assert (tmp_path / "run" / "img" / "det0_model.105.jpg").is_symlink()  # the user's link stays
    assert not [p for p in (tmp_path / "run").rglob("*.tmp")]
    writer.close()


def test_removals_never_follow_a_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed image's files are removed through the folder they were written in: when that folder
    became a link meanwhile, the files the link names stay. The end's removal of the part files
    does the same with a ``.kit-parts`` made a link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("det0_a.jpg", "0001-r0.jsonl"):
        (outside / name).write_bytes(b"mine")
    run = tmp_path / "run"
    writer = _writer(run, layers=["a", "b"])
    real = os.replace

    def then_swap(src: str, dst: str) -> None:
        real(src, dst)  # img/det0_a.jpg is in place; now its folder becomes a link
        if not (run / "img").is_symlink():
            (run / "img").rename(run / "moved")
            (run / "img").symlink_to(outside)

    monkeypatch.setattr(os, "replace", then_swap)
    cam = _cam(slice(0, 9), slice(0, 9))
    with pytest.raises(LinkError, match=r"run/img is a symbolic link"):  # the second overlay
        writer.write_image(
            source="img.jpg",
            image_bgr=np.zeros((H, W, 3), np.uint8),
            detections=_results(_detections()[:1], {(0, "a"): cam, (0, "b"): cam}),
        )
    monkeypatch.undo()
    assert listing(outside) == {"0001-r0.jsonl": b"mine", "det0_a.jpg": b"mine"}
    writer.add_error("x.jpg", "boom")
    writer.close_part()
    (run / journal.PARTS_DIR).rename(run / "parts-moved")
    (run / journal.PARTS_DIR).symlink_to(outside)
    with pytest.raises(LinkError, match=r"\.kit-parts is a symbolic link"):
        writer.finish()
    assert listing(outside) == {"0001-r0.jsonl": b"mine", "det0_a.jpg": b"mine"}
    assert not (run / LOCK_NAME).exists()  # released however finish ended


# ---- NaN and Infinity never reach a JSON file -------------------------------------------------


@pytest.mark.parametrize("field", ["score", "box", "map"])
def test_a_non_finite_score_box_or_map_fails_the_image_before_any_file(tmp_path: Path, field: str) -> None:
    dets = _detections()[:1]
    maps: dict[tuple[int, str], np.ndarray | None] = {(0, "model.105"): _cam(slice(0, 9), slice(0, 9))}
    if field == "score":
        dets[0]["score"] = float("nan")
    elif field == "box":
        dets[0]["box_xyxy"] = [10.0, 10.0, float("inf"), 30.0]
    else:
        maps[(0, "model.105")][0, 0] = np.nan  # type: ignore[index]
    writer = _writer(tmp_path)
    with pytest.raises(OutputError, match=r"detection 0 of a.jpg has a .*(not a finite number|NaN)"):
        writer.write_image(
            source="a.jpg", image_bgr=np.zeros((H, W, 3), np.uint8), detections=_results(dets, maps)
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "manifest.json"]  # no picture
    writer.close()


class NaNAdapter(ToyAdapter):
    """A broken model: every detection's score is NaN."""

    def detect(self, output: Any) -> list[Detection]:
        return [dataclasses.replace(d, score=float("nan")) for d in super().detect(output)]


def refuse_constant(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def strict_json(path: Path) -> Any:
    """A file read as JSON is defined: NaN and Infinity refused (Python's reader takes them)."""
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse_constant)


def test_a_model_that_scores_nan_gives_failed_images_and_a_valid_manifest(tmp_path: Path) -> None:
    src = sources(tmp_path / "src")
    explainer = Explainer(
        Loaded(adapter=NaNAdapter(), weights="toy.pt", settings={"img_size": 32}), upstream="toy"
    )
    result = explainer.run(src, tmp_path / "run")
    assert (result.images, result.failed) == (2, 2)
    manifest = strict_json(tmp_path / "run" / "manifest.json")
    assert all("has a score that is not a finite number (nan)" in i["error"] for i in manifest["images"])
    with pytest.raises(OutputError, match=r"cannot be recorded in JSON: conf_thres holds nan"):
        _writer(tmp_path / "other", conf_thres=float("nan"))
    writer = _writer(tmp_path / "eval")
    record = writer.add_error("x.jpg", "boom")
    writer.commit(record, {"ebpg": float("inf"), "rows": [1.5]})  # a measurement's NaN: null, said
    (part,) = journal.part_files(tmp_path / "eval")
    lines = [json.loads(line, parse_constant=refuse_constant) for line in part.read_text().splitlines()]
    assert lines[-1]["eval"] == {"ebpg": None, "rows": [1.5]}
    writer.close()


# ---- the lock: who holds it, and when it may be taken over ------------------------------------


def test_a_large_image_gets_its_pictures_at_the_maps_bounded_size(tmp_path: Path) -> None:
    """A 3000 x 2000 image with maps at 2048 x 1365 (kit.core.geometry.map_size): overlays drawn at that size
    with the box scaled, energy_in_box measured against the box in the map's pixels, the npz at the
    maps' size, a missed object's overlay alike; boxes stay in the image's pixels."""
    from kit.core.geometry import map_size
    from kit.core.results import MissedResult

    h, w = 2000, 3000
    mh, mw = map_size((h, w))
    assert (mh, mw) == (1365, 2048)
    cam = np.zeros((mh, mw), np.float32)
    cam[341:682, 682:1366] = 1.0  # the box (1000, 500, 2000, 1000) in the map's pixels, and nothing else
    box = (1000.0, 500.0, 2000.0, 1000.0)
    det = DetectionResult(
        id=0,
        detection=Detection(image_index=0, box_xyxy=box, class_id=1, score=0.8, row=0, level=0),
        class_name="dog",
        maps={"l": cam},
    )
    candidate = Detection(
        image_index=0, box_xyxy=(0.0, 0.0, 300.0, 300.0), class_id=1, score=0.1, row=3, level=0
    )
    found = MissedObject(
        image_index=0, gt_box=box, class_id=1, box=(0.0, 0.0, 300.0, 300.0), score=0.1, iou=0.0,
        reason=MissedReason.BELOW_THRESHOLD, candidate=candidate,
    )  # fmt: skip
    missed = MissedResult(id=0, missed=found, class_name="dog", maps={"l": cam})
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
    from kit.core.geometry import normalize
    from kit.core.render import summary

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
