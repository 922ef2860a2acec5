"""kit.report.page: index.html from run folders written by the kit's own RunWriter (and by hand for old,
damaged and hostile ones), read back with an HTML parser: what a browser would build from it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kit.report.page import REPORT_NAME, main
from kit.rundir.lock import RunLock, identity
from kit.rundir.writer import LOCK_NAME
from tests.children import dead_pid, run_module
from tests.runs import picture_run
from tests.unit.kit.report.test_page import page_of


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return picture_run(tmp_path / "run")


def test_a_folder_a_live_run_holds_is_not_written_and_a_dead_runs_lock_is_noted(
    run: Path, capsys: Any
) -> None:
    with RunLock(run / LOCK_NAME, token="live"):  # a live run holds the folder
        assert main([str(run)]) == 2
        err = capsys.readouterr().err
        assert f"pid {os.getpid()}" in err and "index.html is not written" in err and "has finished" in err
        assert not (run / REPORT_NAME).exists()
    lock = {**identity(), "pid": dead_pid(), "token": "x", "started": "then"}  # this host, boot, pidns
    (run / LOCK_NAME).write_text(json.dumps(lock))
    assert main([str(run)]) == 0
    assert "which no longer runs: that run did not finish; the page covers" in page_of(run).text
    assert json.loads((run / LOCK_NAME).read_text()) == lock  # left for the next run to take over


def test_python_m_kit_report_runs_without_loading_torch(run: Path) -> None:
    done = run_module("torch_free", "kit.report.page", str(run))
    assert done.exit == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"exit": 0, "torch": False}
    assert (run / REPORT_NAME).is_file()
