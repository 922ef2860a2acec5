"""The run folder's file-system rules: what the kit writes stays in the folder, one run at a time.

**No links.** Every file and folder the kit makes inside a run folder is made without following a
link: each folder on the way is opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to the one
before (made with ``mkdir`` first where missing), a file is written to a temporary sibling created
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and renamed into place, and removals go through the same
descriptors. A link, a named pipe or another special file where the kit writes is refused with a
:class:`LinkError` naming it. The run folder itself may be a link (``--project`` on a shared disk):
only what is inside it is held to this.

**One writer.** :class:`RunLock` is a file created with ``O_CREAT | O_EXCL`` that names its writer
by more than a pid: host, boot id, PID namespace and the process's start time. A lock is taken
over only when they prove the writer gone (:func:`lock_state`); when they cannot (another host,
another PID namespace, a lock of an older kit), the run is refused with what to do.

Torch-free: the report and the audit write through it too.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from kit.core.errors import OutputError

LOG = logging.getLogger("kit")
LOCK_NAME = ".kit.lock"
MAX_LOCK_BYTES = 64 * 1024  # a lock file is one short JSON line
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_PROC_FD = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else ""
REMOVE_IT = (
    "the kit never writes through a link or into a special file inside a run folder; remove it "
    "(or choose another run folder) and run again"
)


class LinkError(OutputError):
    """A link or special file in a run folder where the kit writes or reads its own files."""


def kind_of(mode: int) -> str:
    """What an ``lstat`` mode is, in words."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device file"


def refusal(path: Path | str, mode: int, what: str) -> LinkError:
    """The error for ``path`` (of ``lstat`` mode ``mode``) where the kit keeps ``what``."""
    return LinkError(f"{path} is {kind_of(mode)}, where the kit keeps {what}; {REMOVE_IT}")


def parts_of(rel: str) -> list[str]:
    """The components of a path relative to a run folder; refused (OutputError) when one could
    leave it: absolute, empty, ``.`` or ``..``."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise OutputError(f"{rel!r} is not a path inside a run folder")
    return parts


@contextlib.contextmanager
def opened_folder(
    root: Path, rel: str = "", *, create: bool = False, made: list[str] | None = None
) -> Iterator[int]:
    """A descriptor of the folder ``root/rel``, each component of ``rel`` opened without following
    a link (made first where missing when ``create``; each folder made is appended to ``made``).

    ``root`` itself is opened as given (it may be a link). Raises :class:`LinkError` for a link or
    a non-folder on the way, FileNotFoundError for a missing one (without ``create``).
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        done: list[str] = []
        for part in parts_of(rel) if rel else []:
            done.append(part)
            inner, new = _open_child(fd, part, create=create, shown=root.joinpath(*done))
            if new and made is not None:
                made.append("/".join(done))
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _open_child(fd: int, name: str, *, create: bool, shown: Path) -> tuple[int, bool]:
    """``name`` in the folder ``fd``, opened as a folder without following a link (made first when
    missing and ``create``); and whether it was made here."""
    new = False
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd), new
    except FileNotFoundError:
        if not create:
            raise
    except OSError as e:
        _refuse_if_not_folder(e, fd, name, shown)
        raise
    try:
        os.mkdir(name, 0o777, dir_fd=fd)
        new = True
    except FileExistsError:  # made meanwhile by another process: open that
        pass
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd), new
    except OSError as e:
        _refuse_if_not_folder(e, fd, name, shown)
        raise


def _refuse_if_not_folder(error: OSError, fd: int, name: str, shown: Path) -> None:
    if error.errno in (errno.ENOTDIR, errno.ELOOP):
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        raise refusal(shown, mode, "a folder") from error


def _split(rel: str) -> tuple[str, str]:
    parts = parts_of(rel)
    return "/".join(parts[:-1]), parts[-1]


def _check_target(fd: int, name: str, shown: Path) -> None:
    """An existing ``name`` in ``fd`` must be a regular file (it is replaced, never written through)."""
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise refusal(shown, mode, "a file it writes")


def write_file(
    root: Path,
    rel: str,
    write: Callable[[IO[bytes]], Any],
    *,
    token: str,
    sync: bool = False,
    made: list[str] | None = None,
) -> None:
    """Write ``root/rel`` atomically without following a link: ``write`` fills a temporary sibling
    (``.<name>.<token>.tmp``, created with O_EXCL | O_NOFOLLOW), which is renamed over ``rel``.

    Folders on the way are made (and appended to ``made``); ``sync`` fsyncs the file and its
    folder. The temporary file goes on any failure. A link or special file at ``rel`` or on the way
    raises :class:`LinkError`; an OSError names ``rel`` when the system named no file.
    """
    parent, name = _split(rel)
    shown = root / rel
    try:
        with opened_folder(root, parent, create=True, made=made) as fd:
            _check_target(fd, name, shown)
            tmp = f".{_shorten(name, 120)}.{token}.tmp"
            tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=fd)
            try:
                with os.fdopen(tfd, "wb") as f:
                    write(f)
                    if sync:
                        f.flush()
                        os.fsync(f.fileno())
                _check_target(fd, name, shown)
                _replace_in(fd, tmp, name)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=fd)
                raise
            if sync:
                os.fsync(fd)
    except OSError as e:
        if e.filename is None and e.errno is not None:  # a failed write names no file: name it
            raise OSError(e.errno, e.strerror, rel) from e
        raise


def _replace_in(fd: int, src: str, dst: str) -> None:
    """Rename ``src`` over ``dst``, both in the folder ``fd`` (renameat: nothing on the way is
    looked up again). Spelled as paths through ``/proc/self/fd`` where it exists, which resolve to
    that folder itself, so that ``os.replace(src, dst)`` is all a caller (or a test) sees."""
    if _PROC_FD:
        os.replace(f"{_PROC_FD}/{fd}/{src}", f"{_PROC_FD}/{fd}/{dst}")
    else:
        os.replace(src, dst, src_dir_fd=fd, dst_dir_fd=fd)


def open_append(root: Path, rel: str) -> IO[bytes]:
    """``root/rel`` opened to append (made, with its folders, where missing), never through a link;
    a special file there raises :class:`LinkError`."""
    parent, name = _split(rel)
    with opened_folder(root, parent, create=True) as fd:
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            out = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=fd)
        except FileExistsError:
            out = _open_existing(fd, name, flags | os.O_NONBLOCK, root / rel)
    return os.fdopen(out, "ab")


def _open_existing(fd: int, name: str, flags: int, shown: Path) -> int:
    try:
        out = os.open(name, flags, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise refusal(
                shown, os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode, "a file it writes"
            ) from e
        raise
    mode = os.fstat(out).st_mode
    if not stat.S_ISREG(mode):
        os.close(out)
        raise refusal(shown, mode, "a file it writes")
    return out


def open_regular(path: Path, *, what: str = "a file it reads") -> IO[bytes]:
    """``path`` opened for reading when it is a regular file: a link (its last component) or a
    named pipe (which would block) raises :class:`LinkError` instead."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise refusal(path, os.lstat(path).st_mode, what) from e
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise refusal(path, mode, what)
    return os.fdopen(fd, "rb")


def is_regular(root: Path, rel: str) -> bool:
    """Whether ``root/rel`` is a regular file reached without a link (False for any path that
    would leave ``root``)."""
    try:
        parent, name = _split(rel)
        with opened_folder(root, parent) as fd:
            return stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except (OSError, OutputError):
        return False


def remove(root: Path, rel: str, *, folder_only: bool = False) -> None:
    """Remove the file ``root/rel``, or the folder if it is empty, never through a link (a link
    itself is removed, not what it names; ``folder_only``: nothing but an empty folder). What
    cannot be removed is logged, not raised."""
    try:
        parent, name = _split(rel)
        with opened_folder(root, parent) as fd:
            if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                os.rmdir(name, dir_fd=fd)
            elif not folder_only:
                os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            LOG.warning("could not remove %s: %s", root / rel, e)
    except OutputError as e:
        LOG.warning("did not remove %s: %s", root / rel, e)


def remove_matching(root: Path, rel: str, keep: Callable[[str], bool]) -> None:
    """Remove the files of the folder ``root/rel`` whose names ``keep`` rejects, then the folder if
    it is empty; never through a link."""
    try:
        with opened_folder(root, rel) as fd:
            for name in os.listdir(fd):
                if not keep(name):
                    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        return
    except (OSError, OutputError) as e:
        LOG.warning("could not clear %s: %s", root / rel, e)
        return
    remove(root, rel)


def entries(folder: Path) -> dict[str, int]:
    """The ``lstat`` mode of every entry of ``folder`` (links not followed); empty if it is missing."""
    found: dict[str, int] = {}
    try:
        with os.scandir(folder) as listing:
            for entry in listing:
                found[entry.name] = entry.stat(follow_symlinks=False).st_mode
    except (FileNotFoundError, NotADirectoryError):
        pass
    return found


def modes(folder: Path, names: Iterable[str]) -> dict[str, int]:
    """The ``lstat`` mode of each of ``names`` in ``folder`` that exists (links not followed)."""
    found: dict[str, int] = {}
    for name in names:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            found[name] = os.lstat(folder / name).st_mode
    return found


def _shorten(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` bytes of UTF-8 (whole characters)."""
    return name.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


# ---- the lock ---------------------------------------------------------------------------------
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


def check_unlocked(out_dir: Path | str) -> None:
    """Refuse early (before a model is loaded) a run folder that another run holds, or may hold."""
    path = Path(out_dir) / LOCK_NAME
    other = read_lock(path) if os.path.lexists(path) else None
    if other is not None:
        state, why = lock_state(other)
        if state != STALE:
            raise OutputError(in_use(path, other, why if state == UNSURE else ""))


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

    @staticmethod
    def _stale(other: Mapping[str, Any]) -> bool:
        """Whether the writer ``other`` names is provably gone (:func:`lock_state`)."""
        return lock_state(other)[0] == STALE


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z")
