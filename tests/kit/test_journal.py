"""The run's journal: part files read up to their last complete line, merged in source order; stems
planned once per run; and the cost of recording an image staying flat as the run grows."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from kit import journal
from kit.errors import OutputError
from kit.journal import Entry, PartWriter
from kit.outputs import plan_stems


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
        journal.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"upstream": "toy", "images": []}))
    write_part(tmp_path, "0001", 1, [(1, "b.jpg"), (3, "d.jpg")])
    write_part(tmp_path, "0001", 0, [(0, "a.jpg"), (2, "c.jpg")])
    manifest = journal.read_manifest(tmp_path)
    assert manifest["upstream"] == "toy"
    assert [i["file"] for i in manifest["images"]] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(OutputError, match="is not a kit manifest"):
        journal.read_manifest(tmp_path)


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
