"""`setup` on local fixture repos: pin, series, idempotence, refusals, rollback, nothing half-made."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from scripts.upstream.checkout import locked


def test_lock_makes_a_second_run_wait(isolated: Path) -> None:
    lock = isolated / ".demo.lock"
    entered = threading.Event()

    def second() -> None:
        with locked(lock):
            entered.set()

    with locked(lock):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        assert not entered.is_set()
    thread.join(timeout=5)
    assert entered.is_set()
