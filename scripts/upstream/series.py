"""Apply a patch series as one commit per patch and know, later, which patch made which commit.

Setup records what it applied in `<git dir>/kit-state.json`: the pin and, per
patch, the file name, its sha256 and the commit it produced. The commits on top of
`refs/patches/upstream-head` that match that record, in order, are setup's; the rest are the user's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from scripts.upstream.checkout import UPSTREAM_HEAD, current_sparse_patterns, sparse_patterns
from scripts.upstream.config import Upstream
from scripts.upstream.errors import PatchApplyError
from scripts.upstream.gitutil import (
    KIT_COMMITTER,
    changed_files,
    commits_between,
    git,
    is_ancestor,
    rev_parse,
)
from scripts.upstream.patchfile import failed_paths, file_sha256
from scripts.upstream.source import is_pin

STATE_FILE = "kit-state.json"
# One commit per patch with fixed committer and dates, so the same inputs give the same commit ids.
# -k keeps subjects verbatim (format-patch --keep-subject exports them verbatim); hooks, signing and
# Message-Id are off whatever the user's config says.
AM_COMMAND = (
    *("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgSign=false", "-c", "i18n.commitEncoding=UTF-8"),
    "am",
    *("--3way", "--keep", "--keep-cr", "--committer-date-is-author-date", "--no-message-id"),
    *("--no-scissors", "--no-gpg-sign", "--whitespace=nowarn", "--quiet"),
)


@dataclass(frozen=True)
class AppliedPatch:
    file: str
    sha256: str
    commit: str


@dataclass(frozen=True)
class SeriesState:
    """What setup last applied in a checkout."""

    pin: str
    patches: tuple[AppliedPatch, ...]


def state_path(repo: Path) -> Path:
    return repo / ".git" / STATE_FILE


def read_state(repo: Path) -> SeriesState | None:
    try:
        data = json.loads(state_path(repo).read_text(encoding="utf-8"))
        return SeriesState(
            pin=data["pin"],
            patches=tuple(AppliedPatch(**p) for p in data["patches"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(repo: Path, state: SeriesState) -> None:
    path = state_path(repo)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def apply_series(repo: Path, patches: Sequence[Path], *, label: str) -> list[AppliedPatch]:
    """`git am` each patch onto HEAD, one commit each. On failure abort the am in progress and
    raise PatchApplyError naming the patch and files; the caller restores what came before."""
    applied = []
    for patch in patches:
        result = git(*AM_COMMAND, str(patch), cwd=repo, check=False, env=KIT_COMMITTER)
        if result.returncode != 0:
            output = result.stdout.decode("utf-8", "replace") + result.stderr
            # a 3-way merge that conflicted names its files only in the index (am --quiet)
            unmerged = git("diff", "--name-only", "--diff-filter=U", cwd=repo, check=False).out.splitlines()
            git("am", "--abort", cwd=repo, check=False)
            files = ", ".join(failed_paths(output) or unmerged) or "see git's words below"
            raise PatchApplyError(
                f"{label}: patch {patch} does not apply (files: {files}).\n{output.strip()}\n"
                "The checkout is as it was before this run. Fix the patch (make it from a checkout "
                "where it applies, then run refresh-patches) or drop it from upstreams.yaml."
            )
        head = rev_parse(repo, "HEAD")
        applied.append(AppliedPatch(file=patch.name, sha256=file_sha256(patch), commit=head or ""))
    return applied


@dataclass(frozen=True)
class CheckoutState:
    """Where an existing checkout stands against its entry in upstreams.yaml."""

    head: str
    upstream_head: str | None
    on_pin: bool  # upstream-head is the pin (an sdist's: its base commit) and an ancestor of HEAD
    based: bool  # HEAD is upstream-head or a descendant of it
    setup_commits: tuple[AppliedPatch, ...]  # setup's commits still in place, in order
    user_commits: tuple[str, ...]  # commits on top that setup did not make
    changes: tuple[str, ...]  # `git status --porcelain` lines
    patch_status: tuple[tuple[str, str], ...]  # (file, applied | changed | pending), series order
    dropped: tuple[str, ...]  # applied patches no longer in the series
    sparse_ok: bool

    @property
    def up_to_date(self) -> bool:
        return (
            self.on_pin
            and self.sparse_ok
            and all(s == "applied" for _, s in self.patch_status)
            and (len(self.setup_commits) == len(self.patch_status))
        )


def inspect_checkout(repo: Path, upstream: Upstream, patches: Sequence[Path]) -> CheckoutState:
    """Compare the checkout at `repo` with the pin and series of `upstream` (read only)."""
    head = rev_parse(repo, "HEAD") or ""
    upstream_head = rev_parse(repo, UPSTREAM_HEAD)
    based = upstream_head is not None and is_ancestor(repo, upstream_head, "HEAD")
    on_top = commits_between(repo, upstream_head, "HEAD") if based and upstream_head else []
    state = read_state(repo)
    recorded = state.patches if state and state.pin == upstream_head else ()
    setup_commits: list[AppliedPatch] = []
    for record, commit in zip(recorded, on_top):
        if record.commit != commit:
            break
        setup_commits.append(record)
    by_file = {p.file: p for p in setup_commits}
    patch_status = []
    for path in patches:
        applied = by_file.get(path.name)
        if applied is None:
            patch_status.append((path.name, "pending"))
        else:
            patch_status.append((path.name, "applied" if applied.sha256 == file_sha256(path) else "changed"))
    order_ok = [p.file for p in setup_commits] == [p.name for p in patches[: len(setup_commits)]]
    if not order_ok:  # same files, other order: the series is not what the checkout holds
        patch_status = [(f, "changed" if s == "applied" else s) for f, s in patch_status]
    series_names = {p.name for p in patches}
    return CheckoutState(
        head=head,
        upstream_head=upstream_head,
        on_pin=based and is_pin(repo, upstream, rev=upstream_head),
        based=based,
        setup_commits=tuple(setup_commits),
        user_commits=tuple(on_top[len(setup_commits) :]),
        changes=tuple(changed_files(repo)),
        patch_status=tuple(patch_status),
        dropped=tuple(p.file for p in setup_commits if p.file not in series_names),
        sparse_ok=current_sparse_patterns(repo) == sparse_patterns(upstream.exclude),
    )
