"""kit.run.distributed: the shares, torchrun's environment, the device per rank (without a process group);
joining a group from a stray or hand-made launch environment (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[4]
TOY = str(REPO_ROOT / "tests" / "toy_main.py")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("src")
    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    (folder / "a.png").write_bytes(cv2.imencode(".png", image)[1].tobytes())
    return folder


def start(source: Path, out: Path, env: dict[str, str], *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, TOY, "--source", str(source), "--project", str(out), "--name", "run", *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


LAUNCH = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stray(rank: int, port: int, *, world: int = 2) -> dict[str, str]:
    """The environment of a shell where WORLD_SIZE, RANK, MASTER_ADDR were left set (no torchrun)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC_") and k not in LAUNCH}
    return {
        **env,
        "PYTHONPATH": str(REPO_ROOT),
        **{"WORLD_SIZE": str(world), "RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
    }


@pytest.mark.parametrize(
    ("rank", "why"), [(1, "nothing answered at 127.0.0.1:{port}"), (0, "1 rank never joined (1)")]
)
def test_a_stray_launch_environment_gives_up_and_says_what_it_waited_for(
    source: Path, tmp_path: Path, rank: int, why: str
) -> None:
    """WORLD_SIZE=2 RANK=r MASTER_ADDR left in the environment, no peer: one line says what the
    process waits for and how to run alone; after --dist-timeout (here 1.2 s) it stops with exit 2."""
    port = free_port()
    proc = start(source, tmp_path, stray(rank, port), "--dist-timeout", "0.02")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    where = f"rank {rank} of 2 at 127.0.0.1:{port}"
    cause = f"started by WORLD_SIZE=2 RANK={rank} MASTER_ADDR=127.0.0.1 MASTER_PORT={port} in the environment"
    assert lines[0] == (
        f"waiting for 1 other process of a torchrun group ({where}); {cause}: unset them to run as one "
        "process; giving up after 0.02 min (--dist-timeout)"
    )
    assert lines[-1].startswith(
        "error: gave up after 0.02 min (--dist-timeout) waiting for the other processes"
    )
    assert where in lines[-1] and why.format(port=port) in lines[-1] and "unset them" in lines[-1]
    assert "Traceback" not in err and len(lines) == 2
    assert not (tmp_path / "run").exists()  # nothing was written


@pytest.mark.parametrize(("rank", "signum"), [(1, signal.SIGINT), (0, signal.SIGINT), (1, signal.SIGTERM)])
def test_ctrl_c_and_sigterm_stop_the_wait_at_once_with_exit_130(
    source: Path, tmp_path: Path, rank: int, signum: int
) -> None:
    proc = start(source, tmp_path, stray(rank, free_port()), "--dist-timeout", "30")
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the line said before waiting
    assert first.startswith("waiting for 1 other process of a torchrun group"), first
    proc.send_signal(signum)
    _, rest = proc.communicate(timeout=20)  # long before the 30 minutes
    assert proc.returncode == 130, rest
    assert rest.startswith("interrupted while waiting for 1 other process") and "Traceback" not in rest


def test_a_port_where_something_else_listens_is_given_up_on_and_ctrl_c_stops_it(
    source: Path, tmp_path: Path
) -> None:
    """A service on MASTER_PORT that accepts connections but is no torch store: torch's client
    would wait for its answer forever, in C++ (neither its timeout nor Ctrl-C reaches it)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nothing ever answers
        port = silent.getsockname()[1]
        proc = start(source, tmp_path, stray(1, port), "--dist-timeout", "0.05")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert "accepted the connection but never answered as torch's store" in err and "Traceback" not in err
        proc = start(source, tmp_path, stray(1, port), "--dist-timeout", "30")
        assert proc.stderr is not None and proc.stderr.readline().startswith("waiting for 1 other process")
        time.sleep(1)  # into the store's connection
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=20)
        assert proc.returncode == 130, rest


def test_processes_started_by_hand_with_the_variables_meet_and_run(source: Path, tmp_path: Path) -> None:
    """A launch without torchrun (the variables set by hand on each process) still forms its group."""
    port = free_port()
    procs = [start(source, tmp_path, stray(rank, port), "--exist-ok") for rank in (1, 0)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["finished"] is True and [Path(i["file"]).name for i in manifest["images"]] == ["a.png"]
