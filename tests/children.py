"""Child processes for the tests that attack the kit: a crash or a memory bomb must be seen as what it
is (an exit code, a signal, a peak), never take the test process or the machine with it.

``run_child`` starts a command under an optional address-space limit, with this checkout first on
``PYTHONPATH``, kills it after ``timeout`` seconds (a blocked read of a FIFO, a wait that never ends),
and returns its exit code, output and peak resident memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


@dataclass(frozen=True)
class Outcome:
    exit: int  # the exit code, or -N for a signal N (as subprocess reports it)
    stdout: str
    stderr: str
    peak_mb: float  # the child's own peak resident memory (ru_maxrss)


# The launcher (tests/process/children/launcher.py) forks the command itself, so that its peak counts
# the command's own pages, not pytest's.
def run_child(
    command: Sequence[str],
    *,
    address_space: int | None = None,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Outcome:
    """Run ``command`` to its end (output into files, so a chatty child cannot block on a pipe)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    with tempfile.TemporaryDirectory() as folder:
        files = Path(folder)
        peak = files / "peak"
        launcher = child("launcher", str(address_space or 0), str(peak), *command)
        with (files / "out").open("w+") as out, (files / "err").open("w+") as err:
            process = subprocess.Popen(
                launcher, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env, cwd=cwd,
                start_new_session=True,
            )  # fmt: skip
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
                raise AssertionError(f"still running after {timeout} s: {list(command)}") from None
            out.seek(0)
            err.seek(0)
            kib = int(peak.read_text()) if peak.exists() else 0
            return Outcome(process.returncode, out.read(), err.read(), kib / 1024)


def child(module: str, *args: str) -> list[str]:
    """The command of ``tests/process/children/<module>.py`` with ``args`` (``python -m``)."""
    return [sys.executable, "-m", f"tests.process.children.{module}", *args]


def child_env(**more: str) -> dict[str, str]:
    """The environment a child started with ``subprocess`` needs to import this checkout first."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **more}


def run_module(module: str, *args: str, **kwargs: object) -> Outcome:
    """:func:`child` ``module`` through :func:`run_child` (same keywords)."""
    return run_child(child(module, *args), **kwargs)  # type: ignore[arg-type]


def dead_pid() -> int:
    """The pid of a process of this host that has ended (and been reaped): a lock's writer gone."""
    ended = subprocess.Popen(child("ends", "exit", "0"), env=child_env())
    assert ended.wait(timeout=120) == 0
    return ended.pid


def grow(megabytes: int, *, hold_seconds: float = 0) -> list[str]:
    """The command of a child that writes ``megabytes`` MB into its memory, then waits ``hold_seconds``."""
    return child("ends", "grow", str(megabytes), str(hold_seconds))


def wait_for(
    ready: Callable[[], bool], *, process: subprocess.Popen[Any], what: str, timeout: float = 120
) -> None:
    """Poll ``ready`` until it holds; fail, saying ``what`` was awaited, if ``process`` ends first or
    ``timeout`` seconds pass (a guard against a hung child, never a bound on anyone's speed)."""
    waited = 0.0
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the child ended (exit {process.returncode}) before {what}")
        if waited > timeout:
            raise AssertionError(f"still waiting for {what} after {timeout} s: the child hangs")
        time.sleep(0.05)
        waited += 0.05
