"""The run's journal: part files read up to their last complete line, merged in source order; stems
planned once per run; and the cost of recording an image staying flat as the run grows."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kit.rundir import journal, reader
from tests.children import GIB, run_module
from tests.unit.kit.rundir.test_journal import hostile_part


def test_a_huge_or_dense_part_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """Lines of 16 MiB of nested JSON (the most a line may hold: the parser's worst case) are parsed
    and dropped one at a time; a line longer than that (here 1 GiB, no newline) is never read
    whole. The reader runs in a child process whose peak memory is measured."""
    dense = b'{"index": 1, "image": [' + b"{}," * (journal.MAX_LINE_BYTES // 3 - 20) + b"{}]}\n"
    assert len(dense) <= journal.MAX_LINE_BYTES
    path = hostile_part(tmp_path, [])
    good_lines = path.read_bytes().splitlines(keepends=True)
    with path.open("wb") as f:
        f.write(b"".join(good_lines[:2]))
        for _ in range(4):
            f.write(dense)
        f.write(good_lines[2])
        f.write(b"[")  # a line that never ends: 1 GiB (a hole in a sparse file, no disk used)
        f.seek(2**30, os.SEEK_CUR)
        f.write(b"]")
    result = run_module("rundir", "read-part", str(path))
    assert result.exit == 0, result.stderr
    read = json.loads(result.stdout)
    entries, one_line_mb, peak_mb = read["entries"], read["one_line_mb"], read["peak_mb"]
    assert entries == 2  # a.jpg and c.jpg; the dense lines are not records
    # One dense line at a time (measured 570 MB against a yardstick of 450 MB in a quiet process; an
    # environment that makes parsing dearer scales both), never two at once nor the 1 GiB line.
    assert peak_mb < one_line_mb * 1.5, (peak_mb, one_line_mb)
    assert "line 8 is not a record (it is longer than 16 MiB" in result.stderr


def test_a_manifest_beyond_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    """A run folder from someone else may hold a manifest.json of gigabytes (sparse: no disk used);
    make report, make audit and --resume refuse it from its size, in a child whose address space is
    capped below it."""
    run = tmp_path / "run"
    run.mkdir()
    with (run / "manifest.json").open("wb") as f:
        f.write(b'{"images": [')
        f.seek(reader.MAX_MANIFEST_BYTES + 2**20, os.SEEK_CUR)
        f.write(b"]}")
    result = run_module("rundir", "load-manifest", str(run), address_space=GIB, timeout=120)
    assert result.exit == 0, result.stderr
    refused = json.loads(result.stdout)["refused"]
    assert "is larger than 512 MiB" in refused and "not read" in refused


def test_a_small_manifest_reads_with_little_address_space_to_spare(tmp_path: Path) -> None:
    """Reading a run's small manifest takes memory of its size, not the 512 MiB limit: a buffer of
    the limit failed every run's end (MemoryError, exit 3) under an address-space limit such as
    ``ulimit -v`` on a cluster. The child allows 256 MiB beyond what it has mapped."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"images": [{"file": "a.png"}]}))
    result = run_module("rundir", "load-manifest", str(run), f"--spare-bytes={2**28}", timeout=120)
    assert result.exit == 0, result.stderr
    assert json.loads(result.stdout) == {"manifest": {"images": [{"file": "a.png"}]}}
