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
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


@dataclass(frozen=True)
class Outcome:
    exit: int  # the exit code, or -N for a signal N (as subprocess reports it)
    stdout: str
    stderr: str
    peak_mb: float  # the child's own peak resident memory (ru_maxrss)


# The child's peak cannot be read from wait4 here: a process forked from pytest starts with pytest's
# pages counted, and Linux carries that high-water mark across exec (a 1 GB worker made a 450 MB read
# look like 976 MB). This small launcher, started fresh, forks the command itself and reports its
# child's ru_maxrss, which then counts the command's own pages only; it ends as its child ended.
LAUNCHER = """
import os, resource, signal, sys
limit, peak_file, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
pid = os.fork()
if pid == 0:
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.execvp(command[0], command)
_, status, usage = os.wait4(pid, 0)
with open(peak_file, "w") as f:
    f.write(str(usage.ru_maxrss))
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.waitstatus_to_exitcode(status))
"""


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
        launcher = [sys.executable, "-c", LAUNCHER, str(address_space or 0), str(peak), *command]
        with (files / "out").open("w+") as out, (files / "err").open("w+") as err:
            child = subprocess.Popen(
                launcher, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env, cwd=cwd,
                start_new_session=True,
            )  # fmt: skip
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, 9)
                child.wait()
                raise AssertionError(f"still running after {timeout} s: {list(command)}") from None
            out.seek(0)
            err.seek(0)
            kib = int(peak.read_text()) if peak.exists() else 0
            return Outcome(child.returncode, out.read(), err.read(), kib / 1024)


def run_python(code: str, *args: str, **kwargs: object) -> Outcome:
    """``python -c code args...`` through :func:`run_child` (same keywords)."""
    return run_child([sys.executable, "-c", textwrap.dedent(code), *args], **kwargs)  # type: ignore[arg-type]
