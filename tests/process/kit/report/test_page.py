"""kit.report.page: index.html from run folders written by the kit's own RunWriter (and by hand for old,
damaged and hostile ones), read back with an HTML parser: what a browser would build from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kit.report.page import REPORT_NAME, main, write_report
from kit.rundir.lock import RunLock, identity
from kit.rundir.writer import LOCK_NAME
from tests.children import child_env, dead_pid, run_module
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


def kit_command(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kit", *args]
    return subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)


def test_python_m_kit_audit_rewrites_index_html_with_the_audit(run: Path) -> None:
    """make audit (python -m kit audit RUN) leaves no page without the audit it wrote."""
    write_report(run)
    assert not page_of(run).find("section", id="audit")
    done = kit_command("audit", str(run))
    assert done.returncode == 0, done.stderr
    assert f"report updated with the audit: {run / REPORT_NAME}" in done.stderr
    assert "audit of" in done.stdout and "report updated" not in done.stdout  # the table alone on stdout
    page = page_of(run)
    assert page.find("section", id="audit") and (run / "audit.json").is_file()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    before = (run / REPORT_NAME).read_bytes()
    (run / "audit.json").unlink()
    done = kit_command("audit", str(run), "--no-write")  # writes nothing: neither audit.json nor the page
    assert done.returncode == 0 and "report updated" not in done.stderr
    assert (run / REPORT_NAME).read_bytes() == before and not (run / "audit.json").exists()


def test_an_audit_whose_page_cannot_be_written_says_so_with_exit_2(run: Path) -> None:
    (run / REPORT_NAME).mkdir()  # as an image named index.html.* left its pictures there
    done = kit_command("audit", str(run))
    assert done.returncode == 2 and "is a folder" in done.stderr, done.stderr
    assert (run / "audit.json").is_file() and (run / REPORT_NAME).is_dir()
    refused = kit_command("audit", str(run / "missing"))
    assert refused.returncode == 2 and "report updated" not in refused.stderr
