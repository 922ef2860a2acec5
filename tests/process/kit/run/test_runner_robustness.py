"""The run loop against hostile and careless input: one image never stops a run.

A full disk (a file-size limit in a child), Ctrl-C (SIGINT to a child) and two runs on one folder
(two processes); the children are tests/process/children/run.py and rundir.py. The
detector is the toy adapter of ``conftest.py``; its letterbox fails on a 10 x 10000 image as
yolov7's does.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kit.core.errors import OutputError
from kit.rundir import reader
from kit.rundir.schema import LOCK_NAME
from tests.children import child, child_env, wait_for
from tests.unit.kit.run.test_runner_robustness import (
    _assert_inside_and_clean,
    _by_name,
    _files_of,
    _png,
    _writer,
)

REPO_ROOT = Path(__file__).resolve().parents[4]  # tests/unit/kit/run/<this file> -> the project root


def test_a_full_disk_fails_only_the_big_image(tmp_path: Path) -> None:
    """RLIMIT_FSIZE: writing past it fails with EFBIG (Python ignores SIGXFSZ); small images still go."""
    src = tmp_path / "src"
    src.mkdir()
    big = (1500, 1500)
    sources = [_png(src / "small1.png"), _png(src / "big.png", big), _png(src / "small2.png", seed=1)]
    limit = 200_000
    assert (src / "big.png").stat().st_size > limit  # its overlay (a JPEG of noise) is too
    out = tmp_path / "run"
    command = child("run", str(out), *map(str, sources), f"--max-file-bytes={limit}")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    entries = _by_name(json.loads((out / "manifest.json").read_text()))
    assert entries["big.png"]["error"].startswith(
        f"could not write the results of '{sources[1]}': OSError: [Errno {errno.EFBIG}] File too large: "
        "'big/det0_feat.jpg'"
    )
    for name in ("small1.png", "small2.png"):
        assert entries[name]["error"] is None and all(p.is_file() for p in _files_of(out, entries[name]))
    assert not [p for p in out.rglob("*") if p.name.startswith("big")]
    _assert_inside_and_clean(out)


def images_written(out: Path) -> int:
    """The images a run being written has recorded so far (0 before its first record)."""
    try:
        return len(reader.read_manifest(out)["images"])
    except (OSError, ValueError):
        return 0


def test_ctrl_c_keeps_a_valid_manifest_and_exits_130_with_one_line(tmp_path: Path) -> None:
    sources = [_png(tmp_path / f"img{k:02d}.png", seed=k) for k in range(40)]
    out = tmp_path / "run"
    proc = subprocess.Popen(
        child("run", str(out), *map(str, sources), "--delay=0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        wait_for(lambda: images_written(out) >= 3, process=proc, what="3 images written")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupt" in lines[0].lower() and "Traceback" not in stderr, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["interrupted"] is True
    assert 3 <= len(manifest["images"]) < len(sources)
    for entry in manifest["images"]:
        assert entry["error"] is None and all(p.is_file() for p in _files_of(out, entry))
    _assert_inside_and_clean(out, parts=True)  # lock released, no temporary file left


def test_two_runs_on_one_folder_second_is_refused_until_the_first_ends(tmp_path: Path, caplog: Any) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        child("rundir", "hold-lock", str(out)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        host = socket.gethostname()
        with pytest.raises(OutputError) as info:
            _writer(out)
        message = str(info.value)
        assert f"pid {holder.pid} on host {host}" in message and LOCK_NAME in message
        assert "--name" in message  # says what to do

        # The same through an entry point's guarded(): exit 2, one line naming the holder.
        second = subprocess.run(
            child("run", str(out), str(_png(tmp_path / "a.png"))),
            capture_output=True, text=True, timeout=120, env=child_env(),
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith("error: ") and f"pid {holder.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert json.loads((out / "manifest.json").read_text())["images"] == []  # not overwritten

        holder.kill()  # dies holding the lock: a stale lock of this host
        holder.wait(timeout=30)
    finally:
        holder.kill()
    assert (out / LOCK_NAME).is_file()
    with caplog.at_level("WARNING", logger="kit"):
        writer = _writer(out)
    assert f"taking over the stale lock {out / LOCK_NAME} of pid {holder.pid}" in caplog.text
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    writer.finish()
    assert not (out / LOCK_NAME).exists()
