"""Shared CLI pieces: argument checks, checkpoints of another kind, exit codes, --half."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kit.cli import main as cli
from kit.core.errors import KitError
from tests.children import dead_pid


def test_a_folder_another_live_run_holds_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    """--exist-ok on a folder whose lock names a live process of this host: refused at argument
    checking; a lock whose process is gone is left for the writer to take over."""
    import socket

    from kit.rundir.lock import identity

    run = tmp_path / "exp"
    run.mkdir()
    lock = run / ".kit.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    with pytest.raises(KitError, match=rf"in use by another kit run \(pid {os.getpid()}"):
        cli.check_output_folder(run, flag="--project", exist_ok=True)
    cli.check_output_folder(run, flag="--project", exist_ok=False)  # a new exp2 is made instead
    lock.write_text(json.dumps({**identity(), "pid": dead_pid(), "started": "then"}))
    assert cli.check_output_folder(run, flag="--project", exist_ok=True) == run
