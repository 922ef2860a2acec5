"""Where a checkout's base comes from, by the entry's kind: a git commit (`checkout.py`) or a
package's sdist (`sdist.py`). Setup, status, check-patches and refresh-patches go through these
few functions and otherwise treat both kinds alike: the base is `refs/patches/upstream-head`, the
series sits on it as one commit per patch."""

from __future__ import annotations

from pathlib import Path

from scripts.upstream import sdist
from scripts.upstream.checkout import configure_remote, fetch_pin
from scripts.upstream.config import Upstream, mirror_help
from scripts.upstream.errors import ArchiveError, FetchError, KitSetupError
from scripts.upstream.gitutil import git, is_local_url, is_reachable, local_path

PIP_INDEX = "the package index of pip's configuration"


def describe(upstream: Upstream, url: str, *, origin: str) -> str:
    """'fetching <pin> from <where> (<origin>)' for the first setup's message."""
    if upstream.kind == "sdist" and sdist.is_cached(upstream):
        return f"{upstream.pin_label} from the cache {sdist.cache_dir() / sdist.archive_name(upstream)}"
    return f"fetching {upstream.commit or upstream.pin_label} from {url or PIP_INDEX} ({origin})"


def init_repo(repo: Path, upstream: Upstream, *, url: str, bare: bool = False) -> None:
    """A new, empty repository at `repo` for `upstream`'s checkout (a git kind's with its remote)."""
    git("init", "--quiet", *(["--bare"] if bare else []), "--template=", str(repo))
    git("config", "core.autocrlf", "false", cwd=repo)
    if upstream.kind == "git":
        configure_remote(repo, url)


def bring_pin(
    repo: Path, upstream: Upstream, *, url: str, origin: str, python: str, depth: int | None = None
) -> str:
    """Make the base commit present in `repo` (fetch the pinned commit, `depth` deep, or commit the
    verified sdist) and return its SHA."""
    if upstream.kind == "sdist":
        try:
            return sdist.bring_base(repo, upstream, url=url, origin=origin, python=python)
        except FetchError as e:  # its message names the package, the archive and the URL
            raise FetchError(f"{e}\n{mirror_help(upstream)}") from e
    try:
        if is_local_url(url) and not local_path(url).is_dir():
            raise FetchError(f"no such folder {local_path(url)}")
        fetch_pin(repo, upstream.commit, depth=depth)
    except FetchError as e:
        raise FetchError(
            f"{upstream.name}: cannot fetch commit {upstream.commit[:12]} from {url} ({origin}): {e}\n"
            + mirror_help(upstream)
        ) from e
    return upstream.commit


def is_pin(repo: Path, upstream: Upstream, *, rev: str | None) -> bool:
    """Whether `rev` is the base `upstream` pins: the commit itself, or a base commit recording the
    pinned archive's sha256."""
    if upstream.kind == "sdist":
        return sdist.records_pin(repo, upstream, rev=rev)
    return rev == upstream.commit


def reachable(upstream: Upstream, url: str, *, origin: str, python: str) -> tuple[bool, str]:
    """Whether the base can be had, and why not: `git ls-remote` for a commit; for an sdist the
    verified archive in the cache, else fetched into it (a hash mismatch is raised, not skipped)."""
    if upstream.kind == "git":
        return is_reachable(url)
    try:
        archive = sdist.obtain_archive(upstream, url, origin=origin, python=python)
    except ArchiveError:
        raise
    except KitSetupError as e:
        return False, str(e)
    return True, f"{archive} (sha256 {upstream.sha256[:12]}...)"


def offline_reason(upstream: Upstream, url: str) -> str | None:
    """None when the sdist can be had without a network (cached, or a local file or folder holding
    it), else why not; for tests that must not download."""
    if sdist.is_cached(upstream):
        return None
    try:
        if sdist.local_archive(upstream, url) is not None:
            return None
    except KitSetupError as e:
        return str(e)
    name, cache = sdist.archive_name(upstream), sdist.cache_dir()
    return f"{name} is not in {cache} and {url or PIP_INDEX} is no local path"
