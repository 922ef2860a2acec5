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
