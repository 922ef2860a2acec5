"""Bring a git directory to an upstream's pin: blobless fetch by SHA, sparse checkout, verify.

Also the two guards of pre-commit's store: a lock per checkout and `clean_path_on_failure`.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from scripts.upstream.errors import FetchError, GitError, PinError
from scripts.upstream.gitutil import LOCAL_UPLOAD_PACK, git, is_local_url, rev_parse

UPSTREAM_HEAD = "refs/patches/upstream-head"


@contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file`, waiting (with a message) while another run holds it."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another run that holds {lock_file} ...", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_file_for(checkout: Path) -> Path:
    return checkout.parent / f".{checkout.name}.lock"


def part_path(checkout: Path) -> Path:
    """Where a new checkout is built before it is renamed into place."""
    return checkout.with_name(checkout.name + ".part")


@contextmanager
def clean_path_on_failure(path: Path) -> Iterator[None]:
    """Delete `path` if the block fails in any way, Ctrl-C included (pre-commit's util of that name)."""
    try:
        yield
    except BaseException:
        if path.exists():
            shutil.rmtree(path)
        raise


def configure_remote(repo: Path, url: str) -> None:
    """Point `origin` at `url`; a local URL gets an upload-pack that serves blobless fetches by SHA.

    The upload-pack setting stays in the checkout's config because checkout and `git am` fetch
    the blobs they need lazily from the same remote.
    """
    if "origin" not in git("remote", cwd=repo).out.split():
        git("remote", "add", "origin", url, cwd=repo)
    elif git("config", "--get", "remote.origin.url", cwd=repo).out != url:
        git("config", "remote.origin.url", url, cwd=repo)
    uploadpack = git("config", "--get", "remote.origin.uploadpack", cwd=repo, check=False).out
    if is_local_url(url) and uploadpack != LOCAL_UPLOAD_PACK:
        git("config", "remote.origin.uploadpack", LOCAL_UPLOAD_PACK, cwd=repo)
    elif not is_local_url(url) and uploadpack:
        git("config", "--unset", "remote.origin.uploadpack", cwd=repo)


# git's words when the remote itself cannot be reached (no network, no such host or folder), as
# opposed to a remote that answered without the commit; retrying with another refspec is pointless.
_UNREACHABLE = (
    "could not resolve host",
    "could not resolve hostname",
    "does not appear to be a git repository",
    "unable to access",
    "connection refused",
    "connection timed out",
    "network is unreachable",
    "could not read from remote repository",
)


def unreachable_reason(error: GitError) -> str | None:
    """git's own line saying the remote cannot be reached, or None when it answered."""
    for line in str(error).splitlines():
        if any(words in line.lower() for words in _UNREACHABLE):
            return line.strip()
    return None


def fetch_pin(repo: Path, pin: str, *, depth: int | None = None) -> None:
    """Fetch commit `pin` blobless; fall back to fetching every branch and tag where the server
    refuses a fetch by SHA. Raises FetchError when the remote cannot be reached (the caller adds how
    to use a mirror), PinError when it does not have the commit."""
    if rev_parse(repo, f"{pin}^{{commit}}") is not None:
        return
    progress = ["--progress"] if sys.stderr.isatty() else []
    shallow = [f"--depth={depth}"] if depth else []
    base = ["fetch", "--filter=blob:none", "--no-tags", "--no-recurse-submodules", *progress]
    try:
        git(*base, *shallow, "origin", pin, cwd=repo, stream=True)
    except GitError as by_sha:
        reason = unreachable_reason(by_sha)
        if reason is not None:
            raise FetchError(f"cannot reach the remote: git says {reason!r}") from by_sha
        print("fetch by SHA refused; fetching all branches and tags instead", file=sys.stderr)
        try:
            git(
                *base,
                "origin",
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
                cwd=repo,
                stream=True,
            )
        except GitError as full:
            raise PinError(f"cannot fetch commit {pin}:\n{by_sha}\nthen:\n{full}") from full
    if rev_parse(repo, f"{pin}^{{commit}}") is None:
        url = git("config", "--get", "remote.origin.url", cwd=repo, check=False).out
        raise PinError(f"commit {pin} is not in {url}; check 'commit:' in upstreams.yaml or the URL override")


def sparse_patterns(exclude: Sequence[str]) -> list[str]:
    """Non-cone sparse patterns that keep everything but the `exclude` paths (anchored at the root)."""
    return ["/*", *("!/" + p.lstrip("/") for p in exclude)] if exclude else []


def current_sparse_patterns(repo: Path) -> list[str]:
    if git("config", "--bool", "core.sparseCheckout", cwd=repo, check=False).out != "true":
        return []
    info = Path(git("rev-parse", "--git-path", "info/sparse-checkout", cwd=repo).out)
    info = info if info.is_absolute() else repo / info
    return info.read_text(encoding="utf-8").split() if info.is_file() else []


def set_sparse(repo: Path, exclude: Sequence[str]) -> None:
    """Leave the `exclude` paths out of the work tree (or include everything when it is empty)."""
    patterns = sparse_patterns(exclude)
    if patterns == current_sparse_patterns(repo):
        return
    if patterns:
        git("sparse-checkout", "set", "--no-cone", *patterns, cwd=repo, stream=True)
    else:
        git("sparse-checkout", "disable", cwd=repo, stream=True)


def checkout_pin(repo: Path, pin: str) -> None:
    """Detach HEAD at `pin` (work tree included), verify it and point UPSTREAM_HEAD at it."""
    git("checkout", "--quiet", "--force", "--detach", pin, cwd=repo, stream=True)
    head = rev_parse(repo, "HEAD")
    if head != pin:
        raise PinError(f"{repo}: HEAD is {head} after checking out the pin {pin}")
    git("update-ref", "-m", "kit: pin", UPSTREAM_HEAD, pin, cwd=repo)
