"""Run folder: manifest content, npz maps, error images, duplicate stems, increment_path."""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from kit.core.errors import OutputError
from kit.rundir.lock import LIVE, RunLock, boot_time, check_unlocked, identity, lock_state
from kit.rundir.naming import LinkError
from kit.rundir.writer import LOCK_NAME
from tests.children import dead_pid
from tests.unit.kit.rundir.test_writer import _writer


def lock_file(run: Path, **fields: Any) -> Path:
    """A lock as this kit writes it for this process, with ``fields`` changed."""
    run.mkdir(exist_ok=True)
    info = {**identity(), "token": "x", "started": "then", "written": time.time(), **fields}
    (run / LOCK_NAME).write_text(json.dumps(info))
    return run / LOCK_NAME


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"pidns": "pid:[4026500000]"}, "it runs in another PID namespace (pid:[4026500000]"),
        ({"pidns": "pid:[4026500000]", "pid": "dead"}, "another PID namespace"),  # not running here: unknown
        ({"host": "elsewhere", "pid": "dead"}, "it runs on another host (elsewhere)"),
        ({"boot_id": "00000000-0000-0000-0000-000000000000"}, "its boot id is not this machine's"),
        ({"pidns": None, "start_time": None, "written": None, "pid": "dead"}, "an older kit wrote it"),
        ({"pid": "unknown"}, "its lock file does not name a process"),
        ({"pid": 2**70}, "its lock file does not name a process"),  # os.kill would overflow
        ({"host": "\x1b[2Jevil", "pid": "dead"}, "on another host (?[2Jevil)"),  # no terminal escapes
    ],
)
def test_a_lock_whose_writer_cannot_be_checked_is_refused_with_how_to_take_over(
    tmp_path: Path, fields: dict[str, Any], why: str
) -> None:
    if fields.get("pid") == "dead":
        fields["pid"] = dead_pid()
    path = lock_file(tmp_path / "run", **fields)
    held = path.read_bytes()
    for refuse in (lambda: _writer(tmp_path / "run"), lambda: check_unlocked(tmp_path / "run")):
        with pytest.raises(OutputError) as refused:
            refuse()
        message = str(refused.value)
        assert why in message and "cannot check" in message
        assert f"If no such run is writing into it any more, delete {path} and run again" in message
    assert path.read_bytes() == held  # never taken over on a guess


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"pid": "dead"}, "that process no longer runs"),
        ({"start_time": "other"}, "its pid now belongs to another process"),  # this pid, reused
        (
            {"boot_id": "00000000-0000-0000-0000-000000000000", "written": "before boot"},
            "has restarted since",
        ),
        (  # an older kit's lock (no PID namespace, start time, written), from before this boot
            {"pidns": None, "start_time": None, "written": None, "pid": "dead", "mtime": "before boot"},
            "written before this machine started",
        ),
    ],
)
def test_a_lock_whose_writer_is_provably_gone_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fields: dict[str, Any], why: str
) -> None:
    booted = boot_time()
    assert booted is not None
    mtime = fields.pop("mtime", None)
    if fields.get("pid") == "dead":
        fields["pid"] = dead_pid()
    if fields.get("start_time") == "other":
        fields["start_time"] = identity()["start_time"] + 1
    if fields.get("written") == "before boot":
        fields["written"] = booted - 60
    path = lock_file(tmp_path / "run", **fields)
    if mtime:
        os.utime(path, (booted - 60, booted - 60))
    with caplog.at_level(logging.WARNING, logger="kit"):
        writer = _writer(tmp_path / "run")
    assert f"taking over the stale lock {path}" in caplog.text and why in caplog.text
    assert json.loads(path.read_text())["token"] == writer._token
    writer.close()
    assert not path.exists()


def test_a_live_run_is_refused_and_its_lock_records_who_it_is(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "run")
    held = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    me = identity()
    assert {k: held[k] for k in ("pid", "host", "boot_id", "pidns", "start_time")} == me
    assert me["boot_id"] and me["pidns"] and isinstance(me["start_time"], int)  # Linux tells all three
    assert lock_state(held) == (LIVE, "its process runs")
    with pytest.raises(OutputError, match=rf"in use by another kit run \(pid {os.getpid()} on host"):
        _writer(tmp_path / "run")
    writer.close()
    lock_file(tmp_path / "lonely", pid=os.getpid())  # the same pid and start time: this very process
    with pytest.raises(OutputError, match="in use by another kit run"):
        _writer(tmp_path / "lonely")


def test_a_lock_that_is_a_link_or_a_pipe_is_refused_at_once(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"pid": dead_pid(), "host": "x"}))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / LOCK_NAME).symlink_to(outside)
    (tmp_path / "b").mkdir()
    os.mkfifo(tmp_path / "b" / LOCK_NAME)
    for run, kind in (("a", "a symbolic link"), ("b", "a named pipe")):
        with pytest.raises(LinkError, match=rf"{LOCK_NAME} is {kind}, where the kit keeps its lock"):
            check_unlocked(tmp_path / run)
        with pytest.raises(LinkError):
            RunLock(tmp_path / run / LOCK_NAME, token="t")
    # The pipe was never opened for reading (that open would have blocked the refusal, and this test):
    # it has no reader now, so a writer that does not wait is turned away.
    with pytest.raises(OSError) as no_reader:
        os.open(tmp_path / "b" / LOCK_NAME, os.O_WRONLY | os.O_NONBLOCK)
    assert no_reader.value.errno == errno.ENXIO
    assert outside.exists()
