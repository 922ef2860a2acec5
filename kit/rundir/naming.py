"""Names in a run folder: nothing the kit writes leaves it, and nothing is written through a link.

**Safe names.** Every name under a run folder is derived so that it stays there (:func:`safe_stem`):
no ``..``, no separator, no leading dot, at most 100 bytes, unique case-insensitively
(:func:`plan_stems`); a path read back is split by :func:`parts_of`, which refuses one that leaves.

**No links.** Every file and folder the kit makes inside a run folder is made without following a
link: each folder on the way is opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to the one
before (made with ``mkdir`` first where missing), a file is written to a temporary sibling created
with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and renamed into place (:func:`write_file`, the kit's one
atomic writer), and removals go through the same descriptors. A link, a named pipe or another
special file where the kit writes is refused with a :class:`LinkError` naming it
(:func:`check_run_folder` before a run). The run folder itself may be a link (``--project`` on a
shared disk): only what is inside it is held to this.

Torch-free: the report, the audit and the evaluation write through it too.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Union

from kit.core.errors import OutputError
from kit.rundir.schema import MAPS_DIR, OWN_FILES, OWN_FOLDERS, PARTS_DIR, RESERVED_NAMES, summary_name

LOG = logging.getLogger("kit")
PathLike = Union[str, Path]
MAX_NAME_BYTES = 100  # an output stem; with "_summary.jpg" and a temporary suffix far below 255
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|\ud800-\udfff]')  # separators, controls, surrogates
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
    token: str | None = None,
    sync: bool = False,
    made: list[str] | None = None,
) -> None:
    """Write ``root/rel`` atomically without following a link: ``write`` fills a temporary sibling
    (``.<name>.<token>.tmp``, created with O_EXCL | O_NOFOLLOW), which is renamed over ``rel``.

    ``token`` names the writer in the temporary's name (default: :func:`new_token`, this process's).
    Folders on the way are made (and appended to ``made``); ``sync`` fsyncs the file and its
    folder. The temporary file goes on any failure. A link or special file at ``rel`` or on the way
    raises :class:`LinkError`; an OSError names ``rel`` when the system named no file.
    """
    parent, name = _split(rel)
    shown = root / rel
    try:
        with opened_folder(root, parent, create=True, made=made) as fd:
            _check_target(fd, name, shown)
            tmp = f".{_shorten(name, 120)}.{token or new_token()}.tmp"
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


def new_token() -> str:
    """What a writer's temporary files carry in their names: its pid and a random token (a killed
    run's are recognized, and removed, by :data:`TEMPORARY`)."""
    return f"{os.getpid()}.{secrets.token_hex(4)}"


TEMPORARY = re.compile(r"\..+\.\d+\.[0-9a-f]{8}\.tmp")  # .<name>.<pid>.<token>.tmp


def replace_file(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` (a file of a run folder, such as ``audit.json``) with
    :func:`write_file`: a reader sees the old file or the new one, never half of one; never through
    a link (:class:`LinkError`); OSError as the system raised it."""
    write_file(path.parent, path.name, lambda f: f.write(payload))


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


# ---- names derived from an image's -------------------------------------------------------------
def safe_stem(name: str) -> str:
    """A file-name stem that cannot leave the run folder, derived from an image's stem.

    Separators (``/``, ``\\``), control characters, characters Windows refuses and undecodable
    bytes (surrogates) become ``_``; leading dots and spaces go (no ``..``, no hidden files), as
    do trailing ones; the result is at most :data:`MAX_NAME_BYTES` bytes of UTF-8. A name that
    had to change gets ``-`` and 8 hex digits of the original name's hash, so two names shortened
    or cleaned to the same text still differ. An ordinary stem (``bus``, ``Bild_ä``) is kept.
    """
    cleaned = _UNSAFE.sub("_", name).lstrip(". ").rstrip(". ")
    if cleaned == name and cleaned and len(cleaned.encode("utf-8")) <= MAX_NAME_BYTES:
        return cleaned
    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:8]
    room = MAX_NAME_BYTES - len(digest) - 1
    head = cleaned.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(". ")
    return f"{head or 'image'}-{digest}"


def plan_stems(sources: Sequence[Path], done: Mapping[int, str] | None = None) -> list[str]:
    """Each image's stem, decided once for the whole run in source order, as one process names
    them (:func:`safe_stem`, then ``_2``, ``_3``, ... against every name taken so far), whichever
    process writes it and whether or not it fails. ``done``: stems an earlier run already wrote
    (by position); they are kept, and no other image takes them."""
    done = dict(done or {})
    taken = {n.casefold() for n in RESERVED_NAMES}
    for stem in done.values():
        taken |= {stem.casefold(), summary_name(stem).casefold()}
    stems = []
    for index, source in enumerate(sources):
        if index in done:
            stems.append(done[index])
            continue
        stem = free_stem(safe_stem(source.stem or source.name), taken)
        taken |= {stem.casefold(), summary_name(stem).casefold()}
        stems.append(stem)
    return stems


def free_stem(stem: str, taken: set[str]) -> str:
    candidate, n = stem, 1
    while {candidate.casefold(), summary_name(candidate).casefold()} & taken:
        n += 1
        candidate = f"{stem}_{n}"
    return candidate


def increment_path(path: PathLike, *, exist_ok: bool = False, sep: str = "") -> Path:
    """Return ``path`` if free (or ``exist_ok``), else the next free ``path{sep}N`` (N >= 2), as yolov7.

    ``runs/exp`` -> ``runs/exp2``, ``runs/exp3``, ...; a file keeps its suffix (``a.txt`` -> ``a2.txt``).
    """
    path = Path(path)
    if exist_ok or not os.path.lexists(path):  # a dangling link counts as taken
        return path
    stem, suffix = (path.stem, path.suffix) if path.is_file() else (path.name, "")
    pattern = re.compile(rf"{re.escape(stem)}{re.escape(sep)}(\d+){re.escape(suffix)}")
    taken = [int(m.group(1)) for p in path.parent.iterdir() if (m := pattern.fullmatch(p.name))]
    return path.with_name(f"{stem}{sep}{max(taken, default=1) + 1}{suffix}")


def latest_path(path: PathLike, *, sep: str = "") -> Path:
    """The newest of ``path``, ``path{sep}2``, ``path{sep}3``, ... that exists (``path`` if none does):
    the folder :func:`increment_path` handed out last."""
    path = Path(path)
    if not path.parent.is_dir():
        return path
    pattern = re.compile(rf"{re.escape(path.name)}{re.escape(sep)}(\d+)")
    taken = [
        int(m.group(1)) for p in path.parent.iterdir() if (m := pattern.fullmatch(p.name)) and p.is_dir()
    ]
    return path.with_name(f"{path.name}{sep}{max(taken)}") if taken else path


# ---- before a run writes -------------------------------------------------------------------------
def check_run_folder(out_dir: PathLike, stems: Sequence[str] = ()) -> None:
    """Refuse (:class:`LinkError`, exit 2) a run folder with a link or special file where
    the kit writes: its own files and folders, the part files, and for each of ``stems`` the image's
    folder, summary sheet and maps file. Nothing is changed; a missing folder passes.

    The folder itself may be a link (a ``--project`` on another disk): only what is inside counts.
    """
    folder = Path(out_dir)
    # Its own names one by one; every entry at once (one listing) when there are images to check.
    top = entries(folder) if stems else modes(folder, [*OWN_FILES, *OWN_FOLDERS])
    if not top:
        return
    _check_entries(folder, top, files=OWN_FILES, folders=OWN_FOLDERS)
    for name, mode in entries(folder / PARTS_DIR).items() if is_folder_in(top, PARTS_DIR) else []:
        if not stat.S_ISREG(mode):
            raise refusal(folder / PARTS_DIR / name, mode, "its part files")
    if not stems:
        return
    _check_entries(folder, top, files=[summary_name(s) for s in stems], folders=stems)
    if is_folder_in(top, MAPS_DIR):
        _check_entries(
            folder / MAPS_DIR, entries(folder / MAPS_DIR), files=[f"{s}.npz" for s in stems], folders=()
        )


def is_folder_in(found: Mapping[str, int], name: str) -> bool:
    """Whether ``name`` is a folder in a listing of :func:`entries` (links not followed)."""
    return name in found and stat.S_ISDIR(found[name])


def _check_entries(
    folder: Path, found: Mapping[str, int], *, files: Sequence[str], folders: Sequence[str]
) -> None:
    """Files may be missing, regular files or folders (an old run's image folder: never written
    through); folders may be missing or folders. Anything else is refused."""
    for name in files:
        mode = found.get(name)
        if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise refusal(folder / name, mode, "a file it writes")
    for name in folders:
        mode = found.get(name)
        if mode is not None and not stat.S_ISDIR(mode):
            raise refusal(folder / name, mode, "a folder it writes into")
