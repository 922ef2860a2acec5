"""The sdist source kind: a package's source archive from the package index, pinned by its sha256.

The archive is fetched once into `${XDG_CACHE_HOME:-~/.cache}/kit/sdist/` and checked against the
pinned sha256 before anything reads it; a setup after that runs offline from the cache. The URL
(`KIT_<NAME>_URL`, the user file, `url:` of the entry) may name the `.tar.gz` itself (a path or
a URL), a folder holding it, or an index for pip's `--index-url` (any other URL); without one, pip's own
configuration (pip.conf, PIP_INDEX_URL) says where the index is. The sha256 never changes with it.

The archive is untrusted input: only regular files and folders under its one top folder are
unpacked (no links, devices, absolute paths, `..`, git metadata), their count and total size
bounded, with tarfile's 'data' filter. The base of the checkout is one commit of the unpacked tree
with a fixed author, date and message (the archive's name and sha256), so its SHA is reproducible.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from scripts.upstream.checkout import UPSTREAM_HEAD
from scripts.upstream.config import Upstream, url_env_var
from scripts.upstream.envinstall import no_build_isolation
from scripts.upstream.errors import ArchiveError, FetchError
from scripts.upstream.gitutil import ISOLATED_CONFIG, KIT_COMMITTER, git, is_local_url, local_path, rev_parse

MAX_ARCHIVE_BYTES = 256 << 20  # ultralytics 8.4.190's sdist is 1.3 MB
MAX_MEMBERS = 20_000  # it has 438
MAX_UNPACKED_BYTES = 1 << 30  # it unpacks to 6 MB
# Names git reads as its own metadata: an archive of Python source has no reason to carry them.
_GIT_NAMES = frozenset({".git", ".gitattributes", ".gitmodules"})
# The base commit's author and committer, with a fixed date: the same archive gives the same SHA.
BASE_DATE = "2000-01-01T00:00:00+0000"
BASE_ENV = {
    **ISOLATED_CONFIG,
    **KIT_COMMITTER,
    "GIT_AUTHOR_NAME": KIT_COMMITTER["GIT_COMMITTER_NAME"],
    "GIT_AUTHOR_EMAIL": KIT_COMMITTER["GIT_COMMITTER_EMAIL"],
    "GIT_AUTHOR_DATE": BASE_DATE,
    "GIT_COMMITTER_DATE": BASE_DATE,
}
# `git add` of the unpacked tree stores every byte as it is, whatever the repository's config says.
_ADD_CONFIG = ("-c", "core.autocrlf=false", "-c", "core.fileMode=true", "-c", "core.safecrlf=false")


def archive_name(upstream: Upstream) -> str:
    """The file name the archive is cached and recorded under, e.g. `ultralytics-8.4.190.tar.gz`."""
    return f"{upstream.package}-{upstream.version}.tar.gz"


def _file_names(upstream: Upstream) -> list[str]:
    """Names an index may give the archive: as spelled, and normalized (PEP 625: lowercase, `_`)."""
    normalized = f"{upstream.package.lower().replace('-', '_').replace('.', '_')}-{upstream.version}.tar.gz"
    return list(dict.fromkeys([archive_name(upstream), normalized]))


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`${XDG_CACHE_HOME:-~/.cache}/kit/sdist`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or ""
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "kit" / "sdist"


def sha256_of(path: Path) -> str:
    """The sha256 of the regular file `path`, at most MAX_ARCHIVE_BYTES (a FIFO is never read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise ArchiveError(f"cannot read the archive {path}: {e.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ARCHIVE_BYTES:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ArchiveError(f"{path} is not a regular file; name the .tar.gz archive itself")
        raise ArchiveError(
            f"{path} has {info.st_size} bytes, more than an sdist may ({MAX_ARCHIVE_BYTES}); "
            "name the package's source archive"
        )
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


_POINT_ELSEWHERE = "Point the URL at the genuine archive (the sha256 never follows the URL)."


def verify(path: Path, upstream: Upstream, *, what: str, fix: str = _POINT_ELSEWHERE) -> None:
    """Refuse `path` unless its sha256 is the pinned one; both hashes are named, then `fix`."""
    got = sha256_of(path)
    if got != upstream.sha256:
        raise ArchiveError(
            f"{upstream.name}: {what} {path} has sha256 {got}, but upstreams.yaml pins "
            f"{upstream.package}=={upstream.version} to sha256 {upstream.sha256}; refused, nothing was "
            f"unpacked. {fix}"
        )


def is_cached(upstream: Upstream) -> bool:
    return (cache_dir() / archive_name(upstream)).is_file()


def local_archive(upstream: Upstream, url: str) -> Path | None:
    """The archive a local URL names (the file, or the file in the folder), or None for an index URL."""
    if not url or not is_local_url(url) or url.startswith("file://"):
        return None
    path = local_path(url)
    if path.is_dir():
        for name in _file_names(upstream):
            if (path / name).exists():
                return path / name
        raise FetchError(
            f"{upstream.name}: the folder {path} holds no {' or '.join(_file_names(upstream))}; "
            "put the archive there or name the file itself"
        )
    if not path.exists():
        raise FetchError(f"{upstream.name}: {path} does not exist; name the {archive_name(upstream)} file")
    return path


def obtain_archive(upstream: Upstream, url: str, *, origin: str, python: str) -> Path:
    """The verified archive in the cache: the cached copy, else copied from a local URL, else
    downloaded with pip. A mismatching hash is refused; no file of the user's is changed."""
    cached = cache_dir() / archive_name(upstream)
    if cached.is_file():
        fix = f"The cache is the kit's: remove that file (rm '{cached}') to fetch the archive again."
        verify(cached, upstream, what="the cached archive", fix=fix)
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cached.parent) as tmp:
            source = local_archive(upstream, url)
            if source is not None:
                verify(source, upstream, what=f"the archive ({origin})")
                got = Path(tmp) / archive_name(upstream)
                shutil.copyfile(source, got)
            else:
                got = _pip_download(upstream, url, origin=origin, python=python, dest=Path(tmp))
            verify(got, upstream, what="the downloaded archive")
            os.replace(got, cached)
    except OSError as e:  # the cache cannot be written: read-only, full, not a folder
        raise FetchError(
            f"{upstream.name}: cannot keep {archive_name(upstream)} in {cached.parent} ({e}); "
            "make it writable or set XDG_CACHE_HOME to a folder that is"
        ) from None
    print(f"{upstream.name}: cached {cached} (sha256 {upstream.sha256})")
    return cached


def _pip_download(upstream: Upstream, url: str, *, origin: str, python: str, dest: Path) -> Path:
    """`pip download` of the pinned sdist into `dest`; pip checks the hash before it builds anything."""
    requirement = dest / "requirement.txt"
    direct = url.endswith(".tar.gz")  # the archive's own URL, else an index (or pip's configured one)
    wanted = f"{upstream.package} @ {url}" if direct else f"{upstream.package}=={upstream.version}"
    requirement.write_text(f"{wanted} --hash=sha256:{upstream.sha256}\n")
    index = ["--index-url", url] if url and not direct else []
    cmd = [python, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes"]
    cmd += [*no_build_isolation(python), *index, "-r", str(requirement), "-d", str(dest / "get")]
    print("+ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL).returncode != 0:
        where = f"{url} ({origin})" if url else "the package index of pip's configuration"
        raise FetchError(
            f"{upstream.name}: cannot download {upstream.package}=={upstream.version} from {where} "
            f"(pip's message is above), and {cache_dir() / archive_name(upstream)} is not cached. "
            f"Offline, point {_url_var(upstream)} at a local copy of the archive "
            f"({_url_var(upstream)}=/path/{archive_name(upstream)}), a folder holding it, or a mirror "
            "of the index (an http(s) or file:// URL); or set PIP_INDEX_URL."
        )
    found = [p for p in (dest / "get").iterdir() if p.name in _file_names(upstream)]
    if not found:
        names = sorted(p.name for p in (dest / "get").iterdir())
        raise FetchError(f"{upstream.name}: pip saved {names}, not {archive_name(upstream)}")
    return found[0]


def _url_var(upstream: Upstream) -> str:
    return url_env_var(upstream.name)


# --- unpacking -------------------------------------------------------------------------------------


def top_folder(upstream: Upstream) -> set[str]:
    """The top folder an sdist of the pin holds everything under (`<name>-<version>`)."""
    return {name.removesuffix(".tar.gz") for name in _file_names(upstream)}


def _members(tar: tarfile.TarFile, archive: Path, *, tops: set[str]) -> Iterator[tarfile.TarInfo]:
    """Each member checked, renamed to its path below the top folder; the first bad one raises."""
    seen: set[str] = set()
    total = 0
    for count, member in enumerate(tar, 1):
        where = f"{archive.name}: member {member.name!r}"
        if count > MAX_MEMBERS:
            raise ArchiveError(f"{archive.name} has more than {MAX_MEMBERS} members; refused, not an sdist")
        if not (member.isfile() or member.isdir()):
            kind = "a link" if member.issym() or member.islnk() else "a device or FIFO"
            raise ArchiveError(f"{where} is {kind}; an sdist holds only files and folders. Refused")
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or not parts or ".." in parts:
            raise ArchiveError(f"{where} is an absolute path or climbs out with '..'. Refused")
        if parts[0] not in tops:
            raise ArchiveError(f"{where} is outside the top folder {sorted(tops)[0]}/. Refused")
        if _GIT_NAMES & {part.lower() for part in parts}:
            raise ArchiveError(f"{where} is git metadata, which would change the checkout. Refused")
        rel = "/".join(parts[1:])
        if rel in seen:
            raise ArchiveError(f"{where} appears twice. Refused")
        seen.add(rel)
        total += member.size
        if total > MAX_UNPACKED_BYTES:
            raise ArchiveError(f"{archive.name} unpacks to more than {MAX_UNPACKED_BYTES} bytes. Refused")
        if rel:
            yield member.replace(name=rel, deep=False)


def unpack(archive: Path, dest: Path, *, upstream: Upstream) -> None:
    """Unpack the (verified) sdist `archive` into the new folder `dest`, without its top folder.
    Every member is checked before any is written."""
    if not hasattr(tarfile, "data_filter"):
        raise FetchError(
            f"this Python ({sys.version.split()[0]}) has no tarfile 'data' filter, which unpacking "
            f"{archive.name} safely needs; use Python 3.9.17, 3.10.12, 3.11.4 or later"
        )
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = list(_members(tar, archive, tops=top_folder(upstream)))
            dest.mkdir()
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise ArchiveError(f"{archive} is not a readable .tar.gz ({e}); refused") from None


# --- the base commit -------------------------------------------------------------------------------


def base_message(upstream: Upstream) -> str:
    name = archive_name(upstream)
    return (
        f"{upstream.package} {upstream.version}, unpacked from its sdist\n\n"
        f"Archive: {name}\nSHA256: {upstream.sha256}\n"
    )


def records_pin(repo: Path, upstream: Upstream, *, rev: str | None) -> bool:
    """Whether commit `rev` is a base commit of this pin (its message records the archive's sha256)."""
    if rev is None:
        return False
    message = git("log", "-1", "--format=%B", rev, cwd=repo, check=False).out
    return message == base_message(upstream).strip()


def commit_tree(repo: Path, tree_dir: Path, *, upstream: Upstream) -> str:
    """Commit every file of `tree_dir` into `repo`'s object store (no ref, no work tree change)."""
    git_dir = git("rev-parse", "--absolute-git-dir", cwd=repo).out
    with tempfile.TemporaryDirectory(prefix="kit-index-") as tmp:
        env = {**ISOLATED_CONFIG, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        where = (f"--git-dir={git_dir}", f"--work-tree={tree_dir}")
        git(*_ADD_CONFIG, *where, "add", "--all", "--force", "--", ".", cwd=tree_dir, env=env)
        tree = git(*where, "write-tree", cwd=tree_dir, env=env).out
    message = base_message(upstream).rstrip("\n")
    return git("commit-tree", "--no-gpg-sign", tree, "-m", message, cwd=repo, env=BASE_ENV).out


def bring_base(repo: Path, upstream: Upstream, *, url: str, origin: str, python: str) -> str:
    """The base commit of the pin in `repo`: the one already there (refs/patches/upstream-head), else
    made from the archive (fetched or cached). Returns its SHA."""
    current = rev_parse(repo, UPSTREAM_HEAD)
    if records_pin(repo, upstream, rev=current):
        return current or ""
    archive = obtain_archive(upstream, url, origin=origin, python=python)
    with tempfile.TemporaryDirectory(prefix="kit-sdist-") as tmp:
        tree = Path(tmp) / "tree"
        unpack(archive, tree, upstream=upstream)
        sha = commit_tree(repo, tree, upstream=upstream)
    print(f"{upstream.name}: base commit {sha} = {archive_name(upstream)} (sha256 {upstream.sha256[:12]}...)")
    return sha
