"""`setup`: a checkout of an upstream at its pin with the patch series on top, then the environment.

Modelled on pre-commit's store: exact ref, verify, a lock per checkout, nothing half-made.
- A new checkout is built in `<dest>.part` (series included) and renamed into place when complete.
- An existing checkout is rebuilt from the pin only when its series, pin or excludes changed and
  it holds no work of the user's; a failure puts HEAD, index, work tree and refs back as they were.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.upstream import command
from scripts.upstream.checkout import (
    UPSTREAM_HEAD,
    checkout_pin,
    clean_path_on_failure,
    configure_remote,
    current_sparse_patterns,
    lock_file_for,
    locked,
    part_path,
    set_sparse,
)
from scripts.upstream.config import Project, Upstream, checkout_path, load_project, url_and_origin
from scripts.upstream.envinstall import install_entry_point, install_kit, require_entry_point
from scripts.upstream.errors import CheckoutError, DirtyCheckoutError
from scripts.upstream.gitutil import git, rev_parse, subject
from scripts.upstream.series import (
    SeriesState,
    apply_series,
    inspect_checkout,
    state_path,
    write_state,
)
from scripts.upstream.source import bring_pin, describe, init_repo


@dataclass(frozen=True)
class SetupResult:
    name: str
    path: Path
    head: str
    action: str  # created | re-applied | up to date
    entry_point: str  # installed | unchanged | missing


def setup_upstream(
    name: str,
    *,
    project: Project | None = None,
    root: Path | str | None = None,
    install: bool = True,
    python: str = sys.executable,
) -> SetupResult:
    """Make `<checkouts>/<name>` the pin plus the series, install the entry point and (with `install`)
    the kit and the upstream's requirements into `python`. Safe to re-run; see the module docstring."""
    project = project if project is not None else load_project()
    upstream = project.upstream(name)
    if install:
        require_entry_point(project, upstream)
    url, origin = url_and_origin(name, project)
    dest = checkout_path(project, name, root)
    with locked(lock_file_for(dest)):
        part = part_path(dest)
        if part.exists():
            print(f"removing {part}, left over from an interrupted run")
            shutil.rmtree(part)
        where = _Source(url=url, origin=origin, python=python)
        if dest.exists():
            action = _update(project, upstream, dest, where)
        else:
            print(f"{name}: {describe(upstream, url, origin=origin)}")
            _create(project, upstream, dest, where)
            action = "created"
        head = rev_parse(dest, "HEAD") or ""
        entry = install_entry_point(project, upstream, dest)
    n = len(upstream.patches)
    print(
        f"{name}: {action} at {head[:12]} (pin {upstream.pin_label} + {n} patch{'es' * (n != 1)}) in {dest}"
    )
    if entry == "missing":
        print(f"{name}: note: {upstream.entry_point} does not exist yet; main_gradcam.py not installed")
    elif entry == "installed":
        print(f"{name}: installed {upstream.entry_point} as {dest / 'main_gradcam.py'}")
    if install:
        install_kit(python, project, upstream, checkout=dest)
    return SetupResult(name=name, path=dest, head=head, action=action, entry_point=entry)


@dataclass(frozen=True)
class _Source:
    """Where this run takes the base from: the URL after overrides, where it came from, and the
    interpreter whose pip downloads an sdist."""

    url: str
    origin: str
    python: str


def _create(project: Project, upstream: Upstream, dest: Path, where: _Source) -> None:
    part = part_path(dest)
    with clean_path_on_failure(part):
        init_repo(part, upstream, url=where.url)
        base = bring_pin(part, upstream, url=where.url, origin=where.origin, python=where.python)
        set_sparse(part, upstream.exclude)
        checkout_pin(part, base)
        _apply_and_record(project, upstream, part)
        part.rename(dest)


def _apply_and_record(project: Project, upstream: Upstream, repo: Path) -> None:
    applied = apply_series(repo, project.patch_paths(upstream.name), label=upstream.name)
    base = rev_parse(repo, UPSTREAM_HEAD) or ""  # the pinned commit, or the sdist's base commit
    write_state(repo, SeriesState(pin=base, patches=tuple(applied)))


def _update(project: Project, upstream: Upstream, dest: Path, where: _Source) -> str:
    name = upstream.name
    if not (dest / ".git").is_dir() or rev_parse(dest, UPSTREAM_HEAD) is None:
        raise CheckoutError(
            f"{dest} exists but was not made by setup (no {UPSTREAM_HEAD}); move it away and run setup again"
        )
    if upstream.kind == "git":
        configure_remote(dest, where.url)
    state = inspect_checkout(dest, upstream, project.patch_paths(name))
    if state.up_to_date:
        extra = []
        if state.user_commits:
            extra.append(f"{len(state.user_commits)} commit(s) of yours on top")
        if state.changes:
            extra.append(f"{len(state.changes)} changed file(s)")
        if extra:
            print(f"{name}: patches in place; kept {' and '.join(extra)}")
        return "up to date"
    if not state.based:
        raise CheckoutError(
            f"{dest}: HEAD {state.head[:12]} is not on top of {UPSTREAM_HEAD}; nothing was changed. "
            f"Keep your work on a branch, `git -C {dest} checkout --detach {UPSTREAM_HEAD}`, and re-run"
        )
    if state.user_commits or state.changes:
        raise DirtyCheckoutError(_refusal(dest, name, state.user_commits, state.changes))
    print(f"{name}: the series, pin or excluded paths changed; re-applying from the pin {upstream.pin_label}")
    _rebuild(project, upstream, dest, where)
    return "re-applied"


def _refusal(dest: Path, name: str, commits: tuple[str, ...], changes: tuple[str, ...]) -> str:
    lines = [f"{name}: the patch series changed, but {dest} holds work of yours; nothing was changed."]
    if commits:
        lines.append("Your commits on top of the patches:")
        lines += [f"  {c[:12]} {subject(dest, c)}" for c in commits]
    if changes:
        lines.append("Uncommitted changes:")
        lines += [f"  {c}" for c in changes]
    lines.append(
        f"Export your commits as patches (make refresh-patches UPSTREAM={name}), commit or stash "
        "your changes, or move the checkout away; then run setup again."
    )
    return "\n".join(lines)


def _rebuild(project: Project, upstream: Upstream, dest: Path, where: _Source) -> None:
    """Reset to the pin and apply the series; on any failure restore the checkout as it was."""
    head = rev_parse(dest, "HEAD") or ""
    branch = git("symbolic-ref", "--quiet", "HEAD", cwd=dest, check=False).out
    old_upstream_head = rev_parse(dest, UPSTREAM_HEAD) or ""
    old_patterns = current_sparse_patterns(dest)
    state_file = state_path(dest)
    old_state = state_file.read_bytes() if state_file.exists() else None
    try:
        base = bring_pin(dest, upstream, url=where.url, origin=where.origin, python=where.python)
        set_sparse(dest, upstream.exclude)
        checkout_pin(dest, base)
        _apply_and_record(project, upstream, dest)
    except BaseException:
        git("am", "--abort", cwd=dest, check=False)
        if old_patterns:
            git("sparse-checkout", "set", "--no-cone", *old_patterns, cwd=dest, check=False)
        elif current_sparse_patterns(dest):
            git("sparse-checkout", "disable", cwd=dest, check=False)
        target = [branch.removeprefix("refs/heads/")] if branch else ["--detach", head]
        git("checkout", "--quiet", "--force", *target, cwd=dest, check=False)
        git("update-ref", UPSTREAM_HEAD, old_upstream_head, cwd=dest, check=False)
        if old_state is None:
            state_file.unlink(missing_ok=True)
        else:
            state_file.write_bytes(old_state)
        raise


def main(argv: Sequence[str]) -> int:
    """`python -m scripts setup <name>` (`make setup-<name>`)."""
    parser = command.parser("setup", "check out the pin, apply the patches, install", root=True)
    parser.add_argument("name")
    parser.add_argument("--no-install", action="store_true", help="skip pip (the kit and the requirements)")
    args = parser.parse_args(argv)

    def body() -> int:
        project = load_project(args.config)
        setup_upstream(args.name, project=project, root=args.root, install=not args.no_install)
        return 0

    return command.run(body)
