"""The unit tier: the kit and scripts in this process only. A test here that starts a process (a
subprocess, a fork, torchrun) fails at once, naming the tier it belongs in; the tier's marker
itself comes from tests/conftest.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import NoReturn

import pytest


def refuse_child(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError(
        "a unit test starts no process (subprocess, fork, posix_spawn): move the test to tests/process/ "
        f"(it tried {args[1] if len(args) > 1 else args!r:.200})"
    )


@pytest.fixture(autouse=True)
def no_child_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse_child)
    # not os.system: the hostile checkpoints pickle it by name
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse_child)
    yield
