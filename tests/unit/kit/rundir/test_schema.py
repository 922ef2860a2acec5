"""kit.rundir.schema's version of the manifest: written by the run writer, absent from an older
kit's manifests (which still read, audit, report and resume), refused when newer than the kit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kit.evaluation.audit import audit_run
from kit.evaluation.audit import main as audit_main
from kit.report.page import write_report
from kit.rundir import reader
from kit.rundir.schema import SCHEMA_VERSION, VERSION_KEY, SchemaVersionError, check_version
from kit.rundir.writer import RunSettings, RunWriter
from tests.runs import IMAGE, det, energy_map, write_run

SETTINGS = RunSettings(
    upstream="yolov7", weights="w.pt", method="gradcam", target="class-logit", layers=("74",)
)


def _manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))


def _rewrite(run: Path, **changes: Any) -> None:
    """The run's manifest with ``changes`` (a value of None drops the key), as another kit wrote it."""
    manifest = _manifest(run)
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def test_the_writer_records_the_schema_version_first(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"a.png": [det(0, 0, 0.9, {"74": energy_map(0.8)})]})
    manifest = _manifest(run)
    assert SCHEMA_VERSION == 2
    assert next(iter(manifest)) == VERSION_KEY and manifest[VERSION_KEY] == 2
    assert manifest["finished"] is True and [i["file"] for i in manifest["images"]] == ["imgs/a.png"]


def test_a_manifest_without_a_version_is_version_1_and_reads(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"a.png": [det(0, 0, 0.9, {"74": energy_map(0.8)})]})
    _rewrite(run, **{VERSION_KEY: None})
    loaded = reader.load_manifest(run)
    assert loaded is not None and VERSION_KEY not in loaded and check_version(loaded, run) == 1
    assert len(reader.read_manifest(run)["images"]) == 1
    audit = audit_run(run)
    assert audit.overall.total.n == 1 and audit.overall.total.median == pytest.approx(0.8)
    assert write_report(run) == run / "index.html"


def test_a_run_of_an_older_kit_resumes_and_is_rewritten_at_this_version(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with RunWriter(SETTINGS, out_dir=out) as writer:
        writer.use(["a.png", "b.png"])
        writer.write_image(
            source="a.png", image_bgr=IMAGE, detections=[det(0, 0, 0.9, {"74": energy_map(0.7)})], index=0
        )
        writer.interrupted()
    _rewrite(out, **{VERSION_KEY: None})
    with RunWriter(SETTINGS, out_dir=out, resume=True) as writer:  # the version is no setting to compare
        writer.use(["a.png", "b.png"])
        assert [e.record["file"] for e in writer.previous] == ["a.png"]
        writer.write_image(source="b.png", image_bgr=IMAGE, detections=[], index=1)
        writer.finish()
    manifest = _manifest(out)
    assert manifest[VERSION_KEY] == SCHEMA_VERSION and [i["file"] for i in manifest["images"]] == [
        "a.png",
        "b.png",
    ]


@pytest.mark.parametrize("version", [3, 99])
def test_a_newer_manifest_is_refused_naming_the_file_and_the_version(
    tmp_path: Path, capsys: Any, version: int
) -> None:
    run = write_run(tmp_path / "run", {"a.png": [det(0, 0, 0.9, {"74": energy_map(0.8)})]})
    _rewrite(run, **{VERSION_KEY: version})
    before = (run / "manifest.json").read_bytes()
    path = re.escape(str(run / "manifest.json"))
    expected = rf"{path} has schema_version {version}, newer than this kit reads \(up to 2\).*upgrade the kit"
    with pytest.raises(SchemaVersionError, match=expected):
        reader.load_manifest(run)
    with pytest.raises(SchemaVersionError, match=expected):
        audit_run(run)
    with pytest.raises(SchemaVersionError, match=expected):
        write_report(run)
    with pytest.raises(SchemaVersionError, match=expected):
        RunWriter(SETTINGS, out_dir=run, resume=True)
    assert audit_main([str(run)]) == 2
    err = capsys.readouterr().err
    assert f"schema_version {version}" in err and "upgrade the kit" in err
    assert (run / "manifest.json").read_bytes() == before and not (run / "audit.json").exists()


@pytest.mark.parametrize("version", ["2", 0, True, 2.5])
def test_a_version_that_is_no_whole_number_from_1_is_refused(tmp_path: Path, version: Any) -> None:
    run = write_run(tmp_path / "run", {"a.png": []})
    _rewrite(run, **{VERSION_KEY: version})
    with pytest.raises(
        SchemaVersionError, match=r"not a version the kit writes \(a whole number from 1 to 2\)"
    ):
        reader.load_manifest(run)


def test_the_records_are_the_results_serialization() -> None:
    """A detection's and a missed object's record are made from their results in one place each; the
    manifest's shape (keys, the candidate's fields for its reason) is what it was."""
    import numpy as np

    from kit.core.detection import Detection, MissedObject, MissedReason
    from kit.core.results import DetectionResult, MissedResult
    from kit.rundir.schema import DetectionRecord, ImageRecord, MapRecord, MissedRecord

    kept = Detection(image_index=0, box_xyxy=(1.0, 2.0, 5.0, 6.0), class_id=1, score=0.5, row=4, level=1)
    result = DetectionResult(id=0, detection=kept, class_name="dog", maps={"l": np.zeros((8, 8), np.float32)})
    record = DetectionRecord.of(result)
    assert record == DetectionRecord(0, [1.0, 2.0, 5.0, 6.0], 1, "dog", 0.5, 1, [])
    candidate = Detection(
        image_index=0, box_xyxy=(9.0, 9.0, 30.0, 30.0), class_id=0, score=0.7, row=8, level=2
    )
    found = MissedObject(
        image_index=0, gt_box=(2.0, 2.0, 6.0, 6.0), class_id=0, box=(4.5, 4.5, 15.0, 15.0), score=0.7,
        iou=0.05, reason=MissedReason.SUPPRESSED, suppressed_by=0, other_class=1, candidate=candidate,
    )  # fmt: skip
    missed = MissedRecord.of(MissedResult(id=0, missed=found, class_name="cat", maps={}))
    missed.maps.append(MapRecord.unreached("l"))
    entry = ImageRecord("a.jpg", 8, 8, [record], None, missed=[missed]).to_json()
    assert json.loads(json.dumps(entry["missed"])) == [
        {
            "id": 0,
            "gt_box": [2.0, 2.0, 6.0, 6.0],
            "class_id": 0,
            "class_name": "cat",
            "candidate": {
                "box": [4.5, 4.5, 15.0, 15.0],
                "score": 0.7,
                "iou": 0.05,
                "why": "suppressed",  # only the field its reason uses: no other_class
                "level": 2,
                "suppressed_by": 0,
                "maps": {"l": {"overlay": None, "energy_in_box": None, "no_gradient": True, "key": None}},
            },
        }
    ]


# ---- the records read back -------------------------------------------------------------------------
def _results() -> tuple[Any, list[Any]]:
    """A detection's result, and a missed object's for each reason (real results, as the run makes them)."""
    import numpy as np

    from kit.core.detection import Detection, MissedObject, MissedReason
    from kit.core.results import DetectionResult, MissedResult

    kept = Detection(image_index=0, box_xyxy=(1.0, 2.0, 5.5, 6.25), class_id=1, score=0.5, row=4, level=1)
    cam = np.zeros((8, 8), np.float32)
    detection = DetectionResult(id=0, detection=kept, class_name="dog", maps={"74": cam, "75": None})
    missed = []
    for k, reason in enumerate(MissedReason):
        none = reason is MissedReason.NO_CANDIDATE
        box = None if none else (4.5, 4.5, 15.0, 15.0)
        candidate = None if none else Detection(0, (9.0, 9.0, 30.0, 30.0), 0, score=0.7, row=8, level=2)
        found = MissedObject(
            image_index=0, gt_box=(2.0, 2.0, 6.0, 6.0), class_id=0, box=box, score=0.0 if none else 0.7,
            iou=0.0 if none else 0.05, reason=reason, suppressed_by=3, other_class=2, kept_id=1,
            candidate=candidate,
        )  # fmt: skip
        missed.append(MissedResult(id=k, missed=found, class_name="cat", maps={}, other_class_name="bird"))
    return detection, missed


def _image_record() -> Any:
    from kit.rundir.schema import DetectionRecord, ImageRecord, MapRecord, MissedRecord

    detection, missed = _results()
    record = DetectionRecord.of(detection)
    record.maps += [MapRecord("74", "a/det0_74.jpg", 0.25, key="det0_74"), MapRecord.unreached("75")]
    missed_records = [MissedRecord.of(m) for m in missed]
    missed_records[0].maps.append(MapRecord("74", "a/missed0_74.jpg", 0.5, key="missed0_74"))
    return ImageRecord("x/a.png", 64, 48, [record], None, "a_summary.jpg", "maps/a.npz", missed_records)


def _through_json(value: Any) -> Any:
    """``value`` as a file holds it: written as the journal and the manifest write it, read back."""
    return json.loads(json.dumps(value, ensure_ascii=False))


def test_a_detection_record_reads_back_equal_to_the_record_of_its_result() -> None:
    from kit.rundir.schema import DetectionRecord, MapRecord

    detection, _ = _results()
    record = DetectionRecord.of(detection)
    record.maps += [MapRecord("74", "a/det0_74.jpg", 0.25, key="det0_74"), MapRecord.unreached("75")]
    entry = _through_json(record.to_json())
    assert entry["maps"]["75"] == {"overlay": None, "energy_in_box": None, "no_gradient": True, "key": None}
    back = DetectionRecord.from_json(entry, stem="a")
    assert back == record
    assert (back.id, back.box_xyxy, back.class_id, back.class_name, back.score, back.level) == (
        0, [1.0, 2.0, 5.5, 6.25], 1, "dog", 0.5, 1,
    )  # fmt: skip
    assert [(m.layer, m.overlay, m.energy_in_box, m.no_gradient) for m in back.maps] == [
        ("74", "a/det0_74.jpg", 0.25, False),
        ("75", None, None, True),
    ]


def test_a_missed_record_reads_back_with_its_reasons_fields_and_stays_a_missed_object() -> None:
    from kit.rundir.schema import CandidateRecord, DetectionRecord, MissedRecord, RecordError

    _, missed = _results()
    for result in missed:
        record = MissedRecord.of(result)
        back = MissedRecord.from_json(_through_json(record.to_json()), stem="a")
        assert back == record and isinstance(back.candidate, CandidateRecord)
        assert (back.gt_box, back.class_id, back.candidate.why) == ([2.0, 2.0, 6.0, 6.0], 0, result.why)
        fields = (back.candidate.suppressed_by, back.candidate.other_class, back.candidate.detection)
        assert fields == {
            "suppressed": (3, None, None),
            "other_class": (None, 2, None),
            "mislocalized": (None, None, 1),
        }.get(result.why, (None, None, None))
    # A missed object is its ground truth, not a detection: read as one, it is refused by name.
    with pytest.raises(RecordError) as error:
        DetectionRecord.from_json(_through_json(MissedRecord.of(missed[0]).to_json()))
    assert error.value.problem == "'box_xyxy' is missing"


def test_an_image_record_reads_back_equal_and_writes_out_the_same_bytes() -> None:
    from kit.rundir.schema import ImageRecord

    record = _image_record()
    text = json.dumps(record.to_json(), ensure_ascii=False)
    back = ImageRecord.from_json(json.loads(text))
    assert back == record
    assert json.dumps(back.to_json(), ensure_ascii=False) == text
    assert (back.stem, back.files()) == (
        "a",
        ["a_summary.jpg", "maps/a.npz", "a/det0_74.jpg", "a/missed0_74.jpg"],
    )
    failed = ImageRecord("b.png", None, None, [], "cannot read")
    assert ImageRecord.from_json(_through_json(failed.to_json())) == failed
    assert "missed" not in failed.to_json()  # only a run that explains missed objects records them


BAD_RECORDS = [  # (change to a good image record, the problem named)
    (
        lambda r: r["detections"][0].update(score="high"),
        "'detections': [0] 'score': 'high' is not a finite number",
    ),
    (lambda r: r["detections"][0].pop("class_id"), "'detections': [0] 'class_id' is missing"),
    (
        lambda r: r["detections"][0].update(box_xyxy=[1, 2, 3]),
        "'detections': [0] 'box_xyxy': [1, 2, 3] is not a box of 4 finite numbers",
    ),
    (
        lambda r: r["detections"][0]["maps"]["74"].update(overlay="../../etc/x.jpg"),
        "'detections': [0] 'maps': layer '74': 'overlay': '../../etc/x.jpg' is not an overlay of this "
        "image's folder",
    ),
    (
        lambda r: r["missed"][1]["candidate"].update(why=None),
        "'missed': [1] 'candidate': 'why': None is not text",
    ),
    (lambda r: r.update(width=-3), "'width': -3 is not a size in pixels"),
    (lambda r: r.update(maps_file="maps/b.npz"), "'maps_file': 'maps/b.npz' is not this image's maps file"),
    (lambda r: r.update(extra=[1.0, float("nan")]), "extra holds nan, not a finite number"),
]


@pytest.mark.parametrize(("change", "problem"), BAD_RECORDS)
def test_a_bad_record_is_refused_naming_the_field_as_the_reader_reports_it(change: Any, problem: str) -> None:
    from kit.rundir.schema import ImageRecord, RecordError, record_problem

    entry = _through_json(_image_record().to_json())
    change(entry)
    with pytest.raises(RecordError) as error:
        ImageRecord.from_json(entry)
    assert error.value.problem == str(error.value) == problem == record_problem(entry)
    assert not reader.is_complete(entry, Path("/nonexistent"))


def test_a_detection_or_map_alone_is_refused_naming_its_field() -> None:
    from kit.rundir.schema import DetectionRecord, MapRecord, RecordError

    entry = _through_json(_image_record().to_json())["detections"][0]
    with pytest.raises(
        RecordError, match=r"^'maps': layer '74': 'overlay': 'a/det0_74.jpg' is not an overlay"
    ):
        DetectionRecord.from_json(entry, stem="b")  # another image's folder
    with pytest.raises(RecordError, match=r"^'energy_in_box': 'x' is not a finite number$"):
        MapRecord.from_json({**entry["maps"]["74"], "energy_in_box": "x"}, layer="74", stem="a")
    with pytest.raises(RecordError, match=r"^\['no'\] is not an object$"):
        MapRecord.from_json(["no"], layer="74", stem="a")
    assert MapRecord.from_json(entry["maps"]["74"], layer="74", stem="a") == MapRecord(
        "74", "a/det0_74.jpg", 0.25, key="det0_74"
    )


def test_the_view_reads_old_and_damaged_records_field_by_field() -> None:
    """What the audit and the report read: an old record (maps as a list, fields missing) and
    damaged values read as None, never refused whole."""
    from kit.rundir.schema import ImageView
    from tests.runs import OLD_MANIFEST

    first, failed, damaged = (ImageView.of(image) for image in OLD_MANIFEST["images"])
    assert damaged is None and first is not None and failed is not None
    assert (failed.file, failed.error, failed.detections(), failed.stem) == ("b.png", "cannot read", [], None)
    dets = first.detections()
    assert dets is not None and dets[4] is None  # "not a detection"
    seen = [(d.id, d.class_id, d.class_name, d.score, [(m.layer, m.energy_in_box) for m in d.maps])
            for d in dets if d is not None]  # fmt: skip
    assert seen == [
        (0, 3, "3", 0.5, [("74", 0.25)]),
        (1, None, "cat", None, [("74", 0.75)]),
        (2, 3, "x", 0.1, []),
        (3, 3, "x", None, [("74", None)]),
    ]
    odd = ImageView({"file": 7, "width": 2.0, "height": "x", "error": 5, "detections": {"no": 1}})
    assert (odd.file, odd.width, odd.height, odd.error, odd.detections()) == ("7", 2, None, "5", None)
    # The audit's box share reads the size as any positive number, the page's aspect ratio as whole pixels.
    half = ImageView({"width": 640.5, "height": 10, "detections": []})
    assert (half.area, half.width, odd.area, ImageView({"width": -4, "height": 3}).area) == (
        6405.0,
        None,
        None,
        None,
    )


def test_a_measurement_reads_back_as_recorded_and_a_bad_one_is_refused_by_field() -> None:
    from kit.rundir.schema import Measurement, RecordError

    measured = Measurement(
        images=1, ground_truth=2, detections=1,
        rows=[{"file": "a.png", "id": 0, "maps": {"74": {"pg": True, "ebpg": 0.5}}}], tried=[True],
        unmatched=[], missed=[{"file": "a.png", "class_id": 3, "box_xyxy": [1.0, 2.0, 3.0, 4.0]}],
        skipped=[], layers=["74", "fused"], curve_error=None, seconds=0.25, curve_seconds=0.0,
    )  # fmt: skip
    entry = _through_json(measured.to_json())
    assert Measurement.from_json(entry) == measured
    old = {k: v for k, v in entry.items() if k != "missed"}  # before missed boxes were recorded
    assert Measurement.from_json(old).missed == []
    with pytest.raises(RecordError) as error:
        Measurement.from_json({**entry, "tried": [1]})
    assert error.value.problem == "'tried': [0] 1 is not true or false"
    with pytest.raises(RecordError, match=r"^'seconds' is missing$"):
        Measurement.from_json({k: v for k, v in entry.items() if k != "seconds"})


def test_eval_json_entries_are_written_from_the_detection_and_read_back_tolerantly() -> None:
    """A matched row names its detection as the manifest's record does (same id, class, score,
    box); the audit and the report read eval.json's entries, damaged ones too, through one view."""
    import numpy as np

    from kit.rundir.schema import EvalEntryView, MatchedRow, MissedBox, UnmatchedRow

    detection, _ = _results()
    measures = {"74": {"pg": True, "ebpg": 0.5}}
    row = MatchedRow.of(
        "a.png", detection, gt_box=np.array([1.004, 2.0, 5.0, 6.0]), iou=0.812345, maps=measures
    )
    entry = _through_json(row.to_json())
    assert list(entry) == [
        "file", "id", "class_id", "class_name", "score", "box_xyxy", "gt_box_xyxy", "iou", "maps",
    ]  # fmt: skip
    assert (entry["id"], entry["class_id"], entry["score"], entry["box_xyxy"]) == (
        0,
        1,
        0.5,
        [1.0, 2.0, 5.5, 6.25],
    )
    assert (entry["gt_box_xyxy"], entry["iou"]) == ([1.0, 2.0, 5.0, 6.0], 0.8123)
    view = EvalEntryView(entry)
    assert (view.file, view.id, view.iou, view.measures) == ("a.png", 0, 0.8123, measures)
    assert _through_json(UnmatchedRow("b.png", 3).to_json()) == {"file": "b.png", "id": 3}
    missed = MissedBox.of("b.png", 2, np.array([1.234, 5.0, 6.0, 7.999]))
    assert _through_json(missed.to_json()) == {
        "file": "b.png",
        "class_id": 2,
        "box_xyxy": [1.23, 5.0, 6.0, 8.0],
    }
    odd = EvalEntryView({"file": None, "id": "7", "iou": float("nan"), "maps": {"74": 3}, "box_xyxy": 5})
    assert (odd.file, odd.id, odd.iou, odd.measures, odd.box) == ("?", None, None, {"74": {}}, None)
    assert EvalEntryView(["not an entry"]).file == "?"
