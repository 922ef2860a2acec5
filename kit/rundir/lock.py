"""One writer per run folder: :class:`RunLock`, a file that names its writer by more than a pid.

The lock (``.kit.lock``) is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and records host, boot
id, PID namespace and the process's start time. A lock is taken over only when they prove the
writer gone (:func:`lock_state`); when they cannot (another host, another PID namespace, a lock of
an older kit), the run is refused with what to do. Readers of a run folder ask :func:`holder`.

Torch-free: the report and the audit check the lock too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kit.core.errors import OutputError
from kit.rundir.naming import LinkError, open_regular
from kit.rundir.schema import LOCK_NAME

LOG = logging.getLogger("kit")
MAX_LOCK_BYTES = 64 * 1024  # a lock file is one short JSON line
LIVE, STALE, UNSURE = "live", "stale", "unsure"


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(4096).strip()
    except (OSError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (field 22 of ``/proc/<pid>/stat``);
    None where there is no such file."""
    text = _read_text(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the name (field 2) may hold spaces and parentheses
    try:
        return int(fields[19])  # field 22; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def boot_time() -> float | None:
    """When this machine booted (``btime`` of ``/proc/stat``, seconds since the epoch)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def identity() -> dict[str, Any]:
    """Who this process is, as a lock records its writer: pid, host, boot id, PID namespace and
    start time (the last three None where the system does not tell)."""
    try:
        pidns: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = None
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "boot_id": _read_text("/proc/sys/kernel/random/boot_id") or None,
        "pidns": pidns,
        "start_time": start_time(os.getpid()),
    }


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def lock_state(other: Mapping[str, Any]) -> tuple[str, str]:
    """Whether the writer a lock names is :data:`LIVE`, :data:`STALE` (provably gone) or
    :data:`UNSURE` (it cannot be checked from here), and why.

    Stale only when every recorded field agrees: the same host, boot and PID namespace with the pid
    not running, or running but started at another time (the pid was reused); or a boot id of this
    host that is not the current one, with the lock written before this boot. Another host,
    another PID namespace (containers that share a host name) or a lock of an older kit (no PID
    namespace or start time) cannot be checked: unsure, unless that older lock was written before
    this boot (its writer is gone) or its pid runs here (live, as before).
    """
    pid, host = other.get("pid"), other.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 2**31 or not isinstance(host, str):
        return UNSURE, "its lock file does not name a process"
    me = identity()
    if host != me["host"]:
        return UNSURE, f"it runs on another host ({_plain(host)}), where this process cannot look"
    boot, written = other.get("boot_id"), other.get("written")
    booted = boot_time()
    before_boot = isinstance(written, (int, float)) and booted is not None and written < booted
    if isinstance(boot, str) and me["boot_id"] and boot != me["boot_id"]:
        if before_boot:
            return STALE, "this machine has restarted since (another boot id)"
        return UNSURE, "its boot id is not this machine's, yet it was written after this machine started"
    pidns, started = other.get("pidns"), other.get("start_time")
    if me["pidns"] is None:  # no PID namespaces here (not Linux): the pid tells, as it always did
        return (LIVE, "its process runs") if _running(pid) else (STALE, "that process no longer runs")
    if not isinstance(pidns, str) or not isinstance(started, int):
        if _running(pid):
            return LIVE, "its pid runs"
        if before_boot:
            return STALE, "it was written before this machine started"
        return UNSURE, "an older kit wrote it, without the PID namespace and start time that would tell"
    if pidns != me["pidns"]:
        return UNSURE, f"it runs in another PID namespace ({_plain(pidns)}: another container on this host?)"
    if not _running(pid):
        return STALE, "that process no longer runs"
    now = start_time(pid)
    if now is not None and now != started:
        return STALE, "its pid now belongs to another process (started at another time)"
    return LIVE, "its process runs"


def read_lock(path: Path) -> dict[str, Any] | None:
    """A lock's content; None if it is gone. Its ``written`` (seconds since the epoch) is the file's
    modification time where the lock does not record it (an older kit's). An unreadable lock is read
    again for up to 1 s (its writer may be between create and write), then reported as an unknown
    owner. A link or special file named like the lock raises :class:`LinkError`."""
    for _ in range(20):
        try:
            with open_regular(path, what="its lock") as f:
                data = json.loads(f.read(MAX_LOCK_BYTES).decode("utf-8"))
                mtime = os.fstat(f.fileno()).st_mtime
            if isinstance(data, dict):
                if not isinstance(data.get("written"), (int, float)):  # an older kit's: the file's time
                    data["written"] = mtime
                return data
        except FileNotFoundError:
            return None
        except LinkError:
            raise
        except (OSError, ValueError, RecursionError):
            pass
        time.sleep(0.05)
    return {"pid": "unknown", "host": "unknown", "started": "unknown (the lock file is unreadable)"}


def in_use(path: Path, other: Mapping[str, Any], why: str = "") -> str:
    """Why a run folder is refused: another run (live, or not provably gone) holds its lock."""
    pid, host, started = (_plain(other.get(k)) for k in ("pid", "host", "started"))
    who = f"pid {pid} on host {host}, started {started}"
    if why:
        return (
            f"run folder {path.parent} is locked by a kit run ({who}) that this process cannot check: "
            f"{why}. If no such run is writing into it any more, delete {path} and run again; otherwise "
            "wait for it to finish, or choose another --name (or drop --exist-ok)."
        )
    return (
        f"run folder {path.parent} is in use by another kit run ({who}); wait for it to finish, or choose "
        f"another --name (or drop --exist-ok). If no such run is active, delete {path}."
    )


def _plain(value: Any) -> str:
    """A value of a lock file as a message shows it: no control characters (a terminal would obey
    them), at most 80 characters."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= 80 else f"{text[:77]}..."


def holder(out_dir: Path | str) -> tuple[str, str, dict[str, Any]] | None:
    """Who holds the lock of the run folder ``out_dir``: the :func:`lock_state` of its writer, why,
    and the lock's content; None when no lock is there. A link or special file named like the lock
    raises :class:`kit.rundir.naming.LinkError`."""
    path = Path(out_dir) / LOCK_NAME
    other = read_lock(path) if os.path.lexists(path) else None
    if other is None:
        return None
    state, why = lock_state(other)
    return state, why, other


def check_unlocked(out_dir: Path | str) -> None:
    """Refuse early (before a model is loaded) a run folder that another run holds, or may hold."""
    held = holder(out_dir)
    if held is not None and held[0] != STALE:
        state, why, other = held
        raise OutputError(in_use(Path(out_dir) / LOCK_NAME, other, why if state == UNSURE else ""))


class RunLock:
    """A lock file in a run folder: created with O_CREAT | O_EXCL | O_NOFOLLOW, naming its writer
    (:func:`identity`, a token, when it was written).

    A lock whose writer is live, or cannot be checked (:func:`lock_state`), is refused with an
    :class:`OutputError` that says what to do; one whose writer is provably gone is taken over,
    with a log line.
    """

    def __init__(self, path: Path, *, token: str) -> None:
        self.path = path
        self.token = token
        self.held = False
        self.info = {**identity(), "token": token, "started": _now(), "written": time.time()}
        for _ in range(3):  # a takeover may race another one: try again
            if self._create():
                self.held = True
                return
            other = read_lock(path)
            if other is None:  # vanished meanwhile, or written right now: look again
                time.sleep(0.05)
                continue
            state, why = lock_state(other)
            if state != STALE:
                raise OutputError(in_use(path, other, why if state == UNSURE else ""))
            LOG.warning(
                "taking over the stale lock %s of pid %s on %s (%s)",
                path,
                other.get("pid"),
                other.get("host"),
                why,
            )
            if read_lock(path) == other:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        raise OutputError(f"cannot take the lock {path}: another run keeps taking it; try again")

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Delete the lock file if it is still this writer's; safe to call twice."""
        if self.held:
            self.held = False
            try:
                other = read_lock(self.path)
            except LinkError as e:
                LOG.warning("%s", e)
                return
            if other is not None and other.get("token") == self.token:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    def _create(self) -> bool:
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            raise OutputError(f"cannot create the lock file {self.path}: {e.strerror or e}") from e
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(self.info) + "\n")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        return True


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z")
