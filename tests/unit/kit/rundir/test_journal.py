"""The run's journal: part files read up to their last complete line, merged in source order; stems
planned once per run; and the cost of recording an image staying flat as the run grows."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from kit.core.errors import OutputError
from kit.rundir import journal, reader
from kit.rundir import naming as rundir
from kit.rundir.journal import Entry, PartWriter
from kit.rundir.naming import plan_stems


def record(name: str, **more: Any) -> dict[str, Any]:
    return {"file": name, "width": 4, "height": 3, "detections": [], "error": None, **more}


def write_part(out: Path, attempt: str, rank: int, entries: list[tuple[int, str]]) -> Path:
    part = PartWriter(out, attempt=attempt, rank=rank, world=2)
    for index, name in entries:
        part.append(Entry(record=record(name), index=index))
    part.close()
    return part.path


def test_a_part_holds_a_header_and_one_line_per_image(tmp_path: Path) -> None:
    path = write_part(tmp_path, "0001", 1, [(1, "b.jpg"), (3, "d.jpg")])
    assert path == tmp_path / journal.PARTS_DIR / "0001-r1.jsonl"
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"kit_part": 1, "attempt": "0001", "rank": 1, "world": 2}
    part = journal.read_part(path)
    assert [(e.index, e.record["file"]) for e in part.entries] == [(1, "b.jpg"), (3, "d.jpg")]
    assert not part.cut


def test_a_part_cut_mid_line_is_read_up_to_its_last_complete_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_part(tmp_path, "0001", 0, [(0, "a.jpg"), (2, "c.jpg"), (4, "e.jpg")])
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b'"e.jpg"') + 3])  # SIGKILL while the last line was written
    part = journal.read_part(path)
    assert [e.record["file"] for e in part.entries] == ["a.jpg", "c.jpg"] and part.cut
    path.write_bytes(data[:20])  # killed while writing the header: nothing to read, no error
    assert journal.read_part(path).entries == []
    lines = data.split(b"\n")
    lines[2] = b'{"index": 2, "image": {"file"'  # a damaged line in the middle: reading stops there
    path.write_bytes(b"\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="kit"):
        assert [e.record["file"] for e in journal.read_part(path).entries] == ["a.jpg"]
    assert f"{path}: line 3 is not a record" in caplog.text


def test_the_merge_keeps_each_images_last_record_in_source_order(tmp_path: Path) -> None:
    files = ["a.jpg", "b.jpg", "c.jpg", "b.jpg", "e.jpg"]  # b.jpg given twice: two images
    keys = journal.keys_of(files)
    assert keys[1] == ("b.jpg", 0) and keys[3] == ("b.jpg", 1)
    write_part(tmp_path, "0001", 0, [(0, "a.jpg"), (2, "c.jpg")])  # a first launch, killed
    write_part(tmp_path, "0001", 1, [(1, "b.jpg")])
    later = PartWriter(tmp_path, attempt="0002", rank=0, world=1)  # the resumed launch
    later.append(Entry(record=record("c.jpg", error="redone"), index=2))
    later.append(Entry(record=record("b.jpg"), index=3, occurrence=1))
    later.append(Entry(record=record("e.jpg"), index=4))
    later.close()
    earlier = journal.manifest_entries([record("gone.jpg"), record("a.jpg", width=99)])
    merged = journal.merge_entries(earlier, journal.read_parts(tmp_path), keys)
    assert [e.key for e in merged] == [*keys, ("gone.jpg", 0)]  # source order; unknown ones after
    assert merged[0].record["width"] == 4  # the part's record is later than the manifest's
    assert merged[2].record["error"] == "redone"  # the later launch's record wins


def test_read_manifest_reads_a_run_that_never_merged(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is not a kit run folder: it has no manifest.json"):
        reader.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"upstream": "toy", "images": []}))
    write_part(tmp_path, "0001", 1, [(1, "b.jpg"), (3, "d.jpg")])
    write_part(tmp_path, "0001", 0, [(0, "a.jpg"), (2, "c.jpg")])
    manifest = reader.read_manifest(tmp_path)
    assert manifest["upstream"] == "toy"
    assert [i["file"] for i in manifest["images"]] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(OutputError, match="is not a kit manifest"):
        reader.read_manifest(tmp_path)


def test_stems_are_planned_for_the_whole_run_whatever_fails_or_is_done() -> None:
    sources = [Path(p) for p in ("x/A.png", "y/a.jpg", "z/a.png", "maps.jpg", "b c.png", "a_2.png")]
    stems = plan_stems(sources)
    assert stems == ["A", "a_2", "a_3", "maps_2", "b c", "a_2_2"]
    # A resumed run keeps what its first launch wrote and plans the rest the same way.
    assert plan_stems(sources, {1: "a_2", 3: "maps_2"}) == stems
    # Written by an older kit, whose names depended on which images failed: never reused.
    assert plan_stems(sources, {5: "a_3"}) == ["A", "a_2", "a_4", "maps_2", "b c", "a_3"]


def test_recording_an_image_costs_the_same_late_in_a_run(tmp_path: Path) -> None:
    """Appending a line never rereads or rewrites earlier records: the part grows by one line."""
    part = PartWriter(tmp_path, attempt="0001", rank=0, world=1)
    sizes = []
    for k in range(300):
        part.append(Entry(record=record(f"img{k:05d}.jpg"), index=k))
        sizes.append(part.path.stat().st_size)
    part.close()
    steps = {b - a for a, b in zip(sizes, sizes[1:])}
    # One line each, however long the run (a line's length varies only with its index's digits).
    assert max(steps) - min(steps) <= 2 and part.lines == 300


# ---- every line read back is checked: what fails is left out, logged once, and redone ----------


def good(name: str, stem: str, **more: Any) -> dict[str, Any]:
    """A record as the writer makes it: an image with one detection and its files."""
    return record(
        name,
        summary=f"{stem}_summary.jpg",
        maps_file=f"maps/{stem}.npz",
        detections=[
            {
                "id": 0,
                "box_xyxy": [1.0, 2.0, 3.0, 4.0],
                "class_id": 0,
                "class_name": "blob",
                "score": 0.9,
                "level": 0,
                "maps": {
                    "feat": {"overlay": f"{stem}/det0_feat.jpg", "energy_in_box": 0.5, "no_gradient": False}
                },
            }
        ],
        **more,
    )


def with_detection(stem: str, **change: Any) -> dict[str, Any]:
    rec = good("x.jpg", stem)
    rec["detections"][0].update(change)
    return rec


MEASURED = {
    "images": 1,
    "ground_truth": 1,
    "detections": 1,
    "rows": [{"maps": {"feat": {"pg": True, "ebpg": 0.5}}}],
    "tried": [False],
    "unmatched": [],
    "skipped": [],
    "layers": ["feat"],
    "curve_error": None,
    "seconds": 0.1,
    "curve_seconds": 0.0,
}


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


# Each hostile line, and the part of the warning that says why it is left out.
HOSTILE: list[tuple[str, str]] = [
    (json.dumps({"index": 1, "image": good("b.jpg", "/etc/passwd")}), "not a summary sheet the kit names"),
    (json.dumps({"index": 1, "image": good("b.jpg", "..")}), "not a summary sheet the kit names"),
    (
        json.dumps({"index": 1, "image": {**good("b.jpg", "b"), "maps_file": "../../etc/x.npz"}}),
        "is not this image's maps file",
    ),
    (
        json.dumps({"index": 1, "image": with_detection("b", maps={"feat": {"overlay": "b/../../x.jpg"}})}),
        "is not an overlay of this image's folder",
    ),
    (
        '{"index": 1, "image": ' + json.dumps(with_detection("b", score=0.5)).replace("0.5", "NaN") + "}",
        "nan",
    ),
    (
        '{"index": 1, "image": '
        + json.dumps(with_detection("b", score=0.5)).replace("0.5", "Infinity")
        + "}",
        "inf",
    ),
    (
        json.dumps({"index": 1, "image": with_detection("b", box_xyxy="1,2,3,4")}),
        "not a box of 4 finite numbers",
    ),
    (json.dumps({"index": 1, "image": with_detection("b", score=10**400)}), "score"),  # beyond a float
    (
        json.dumps({"index": 1, "image": with_detection("b", box_xyxy=[0, 0, 10**400, 1])}),
        "not a box of 4 finite numbers",
    ),
    (json.dumps({"index": 1, "image": with_detection("b", id=True)}), "'id': True is not a whole number"),
    (json.dumps({"index": 1, "image": {**good("b.jpg", "b"), "detections": {}}}), "is not a list"),
    (json.dumps({"index": True, "image": good("b.jpg", "b")}), "is not a place in the source list"),
    (json.dumps({"index": 1, "image": ["b.jpg"]}), "the record is not an object"),
    (json.dumps({"index": 1, "image": good("/etc/passwd", "b")}), "is not the image at position 1"),
    (json.dumps({"index": 7, "image": good("b.jpg", "b")}), "is not the image at position 7"),
    (
        json.dumps({"index": 1, "image": good("b.jpg", "b"), "eval": {**MEASURED, "rows": "x"}}),
        "its measurement",
    ),
    (json.dumps({"index": 1, "image": {**good("b.jpg", "b"), "x": [[[[[]]]]]}}), ""),  # another key: kept
    (
        json.dumps({"index": 1, "image": {**good("b.jpg", "b"), "x": _deep(200)}}),
        "nests deeper than a record",
    ),
]


def hostile_part(out: Path, lines: list[str]) -> Path:
    """A part file: the header, a good line for a.jpg, ``lines``, then a good line for c.jpg."""
    path = out / journal.PARTS_DIR / "0001-r0.jsonl"
    path.parent.mkdir(parents=True)
    header = json.dumps({"kit_part": 1, "attempt": "0001", "rank": 0, "world": 1})
    first = json.dumps({"index": 0, "image": good("a.jpg", "a"), "eval": MEASURED})
    last = json.dumps({"index": 2, "image": good("c.jpg", "c")})
    path.write_text("\n".join([header, first, *lines, last]) + "\n")
    return path


def test_each_hostile_line_is_left_out_with_its_reason_and_the_reading_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = journal.keys_of(["a.jpg", "b.jpg", "c.jpg"])
    for k, (line, why) in enumerate(HOSTILE):
        out = tmp_path / f"run{k}"
        path = hostile_part(out, [line])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kit"):
            part = journal.read_part(path, keys=keys)
        files = [e.record["file"] for e in part.entries]
        if not why:  # a record with keys the kit does not know, otherwise good: kept
            assert files == ["a.jpg", "b.jpg", "c.jpg"] and not caplog.text
            continue
        assert files == ["a.jpg", "c.jpg"], line  # left out; the reading went on
        assert f"{path}: line 3 is not a record" in caplog.text and why in caplog.text, caplog.text
        assert "explained again on --resume" in caplog.text and part.invalid == (
            {1} if '"index": 1' in line else set()
        )
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kit"):
            journal.read_part(path, keys=keys)  # read again (the end of the run): not logged again
        assert not caplog.text


def test_without_the_source_list_only_the_schema_is_checked(tmp_path: Path) -> None:
    """read_manifest (the report, the audit) knows no sources: a record of another file is read,
    one that fails the schema is not."""
    (tmp_path / "manifest.json").write_text(json.dumps({"upstream": "toy", "images": []}))
    hostile_part(tmp_path, [json.dumps({"index": 1, "image": good("/etc/passwd", "b")}), HOSTILE[4][0]])
    manifest = reader.read_manifest(tmp_path)
    assert [i["file"] for i in manifest["images"]] == ["a.jpg", "/etc/passwd", "c.jpg"]
    json.dumps(manifest, allow_nan=False)  # no NaN came through


def test_an_image_whose_latest_line_was_left_out_is_explained_again(tmp_path: Path) -> None:
    keys = journal.keys_of(["a.jpg", "b.jpg", "c.jpg"])
    bad = json.dumps({"index": 1, "image": with_detection("b", id="zero")})
    fine = json.dumps({"index": 1, "image": good("b.jpg", "b")})
    assert journal.untrusted([journal.read_part(hostile_part(tmp_path / "x", [fine, bad]), keys=keys)]) == {1}
    assert (
        journal.untrusted([journal.read_part(hostile_part(tmp_path / "y", [bad, fine]), keys=keys)]) == set()
    )
    first = journal.read_part(hostile_part(tmp_path / "z", [bad]), keys=keys)
    later = PartWriter(tmp_path / "z", attempt="0002", rank=0, world=1)  # a later launch redid it
    later.append(Entry(record=good("b.jpg", "b"), index=1))
    later.close()
    assert journal.untrusted(journal.read_parts(tmp_path / "z", keys=keys)) == set()
    assert journal.untrusted([first]) == {1}


def test_a_writer_refuses_what_it_could_not_read_back(tmp_path: Path) -> None:
    part = PartWriter(tmp_path, attempt="0001", rank=0, world=1)
    with pytest.raises(OutputError, match="not finite"):
        part.append(Entry(record=record("a.jpg", score=float("nan")), index=0))
    with pytest.raises(OutputError, match=r"is 17 MiB, more than the 16 MiB a record may hold.*--max-det"):
        part.append(Entry(record=record("a.jpg", big="x" * (17 * 2**20)), index=0))
    part.close()
    assert not part.path.exists()  # nothing was written


def test_a_part_or_manifest_that_is_a_link_or_a_pipe_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write_part(outside, "0001", 0, [(0, "a.jpg")])
    (outside / "manifest.json").write_text(json.dumps({"images": []}))
    run = tmp_path / "run"
    run.mkdir()
    (run / journal.PARTS_DIR).symlink_to(outside / journal.PARTS_DIR)
    with pytest.raises(rundir.LinkError, match=r"\.kit-parts is a symbolic link"):
        journal.part_files(run)
    (run / journal.PARTS_DIR).unlink()
    (run / journal.PARTS_DIR).mkdir()
    (run / journal.PARTS_DIR / "0002-r0.jsonl").symlink_to(outside / journal.PARTS_DIR / "0001-r0.jsonl")
    with pytest.raises(
        rundir.LinkError, match=r"0002-r0.jsonl is a symbolic link, where the kit keeps a part"
    ):
        journal.read_parts(run)
    (run / "manifest.json").symlink_to(outside / "manifest.json")
    with pytest.raises(
        rundir.LinkError, match=r"manifest.json is a symbolic link, where the kit keeps its manifest"
    ):
        reader.load_manifest(run)
    (run / "manifest.json").unlink()
    os.mkfifo(run / "manifest.json")
    with pytest.raises(rundir.LinkError, match=r"manifest.json is a named pipe"):  # not opened: no hang
        reader.load_manifest(run)
