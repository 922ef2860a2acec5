"""`status`: per upstream, where its checkout stands; then the interpreter and library versions in use."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from scripts.upstream import command
from scripts.upstream.checkout import UPSTREAM_HEAD
from scripts.upstream.config import Project, checkout_path, load_project, url_and_origin
from scripts.upstream.envinstall import ENTRY_POINT_NAME, entry_point_source
from scripts.upstream.gitutil import subject
from scripts.upstream.series import CheckoutState, inspect_checkout
from scripts.upstream.source import PIP_INDEX

# What `status` reports the versions of: label -> distributions that provide it, first found wins.
LIBRARIES = {
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "numpy": ("numpy",),
    "opencv": (
        "opencv-python-headless",
        "opencv-python",
        "opencv-contrib-python-headless",
        "opencv-contrib-python",
    ),
}


@dataclass(frozen=True)
class UpstreamStatus:
    name: str
    path: Path
    url: str
    url_origin: str
    pin: str  # as messages show it: the short SHA, or package==version and the sdist's sha256
    state: CheckoutState | None  # None: not set up
    user_commit_subjects: tuple[str, ...]
    entry_point: str  # installed | differs | not installed | no source


def upstream_status(project: Project, name: str, root: Path | str | None = None) -> UpstreamStatus:
    upstream = project.upstream(name)
    path = checkout_path(project, name, root)
    url, origin = url_and_origin(name, project)
    state = None
    subjects: tuple[str, ...] = ()
    entry = "no source"
    if (path / ".git").is_dir():
        state = inspect_checkout(path, upstream, project.patch_paths(name))
        subjects = tuple(f"{c[:12]} {subject(path, c)}" for c in state.user_commits)
        src, dst = entry_point_source(project, upstream), path / ENTRY_POINT_NAME
        if not dst.is_file():
            entry = "not installed"
        elif src.is_file():
            entry = (
                "installed"
                if src.read_bytes() == dst.read_bytes()
                else "differs from " + upstream.entry_point
            )
        else:
            entry = "installed (source missing)"
    return UpstreamStatus(name, path, url, origin, upstream.pin_label, state, subjects, entry)


def library_versions() -> dict[str, str]:
    versions = {}
    for label, dists in LIBRARIES.items():
        versions[label] = "not installed"
        for dist in dists:
            try:
                versions[label] = (
                    f"{metadata.version(dist)} ({dist})" if len(dists) > 1 else metadata.version(dist)
                )
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def format_upstream(s: UpstreamStatus) -> list[str]:
    lines = [f"{s.name}: {s.path}", f"  url: {s.url or PIP_INDEX} (from {s.url_origin})"]
    st = s.state
    if st is None:
        return [*lines, f"  not set up (make setup-{s.name})"]
    base = (st.upstream_head or "?")[:12]
    if st.on_pin and base != s.pin:  # an sdist: the pin is the archive, the base its commit
        lines.append(
            f"  pin: {s.pin}, base commit {base} ({UPSTREAM_HEAD}, an ancestor of HEAD {st.head[:12]})"
        )
    elif st.on_pin:
        lines.append(f"  pin: {s.pin} ({UPSTREAM_HEAD} is the pin and an ancestor of HEAD {st.head[:12]})")
    elif not st.based:
        lines.append(f"  pin: {s.pin}, but HEAD {st.head[:12]} is not on top of {UPSTREAM_HEAD}")
    else:
        lines.append(f"  pin: {s.pin}, but {UPSTREAM_HEAD} is {base}: run setup")
    if not st.sparse_ok:
        lines.append("  excluded paths differ from upstreams.yaml: run setup")
    lines.append("  patches:" if st.patch_status or st.dropped else "  patches: none in the series")
    for file, status in st.patch_status:
        note = {"changed": " (the file changed since it was applied: run setup)", "pending": " (run setup)"}
        lines.append(f"    {status:8} {file}{note.get(status, '')}")
    lines += [f"    dropped  {file} (applied, no longer in the series: run setup)" for file in st.dropped]
    if s.user_commit_subjects:
        lines.append("  your commits on top (export them with refresh-patches):")
        lines += [f"    {c}" for c in s.user_commit_subjects]
    if st.changes:
        lines.append("  local changes:")
        lines += [f"    {c}" for c in st.changes]
    else:
        lines.append("  local changes: none")
    lines.append(f"  entry point {ENTRY_POINT_NAME}: {s.entry_point}")
    return lines


def format_status(statuses: Sequence[UpstreamStatus], python: str = sys.executable) -> str:
    lines = []
    for s in statuses:
        lines += format_upstream(s)
    lines.append(f"python: {python}")
    lines += [f"  {label}: {version}" for label, version in library_versions().items()]
    return "\n".join(lines)


def status(project: Project | None = None, root: Path | str | None = None) -> str:
    project = project if project is not None else load_project()
    return format_status([upstream_status(project, name, root) for name in project.upstreams])


def main(argv: Sequence[str]) -> int:
    """`python -m scripts status` (`make status`)."""
    args = command.parser("status", "where each checkout stands; versions in use", root=True).parse_args(argv)

    def body() -> int:
        print(status(load_project(args.config), args.root))
        return 0

    return command.run(body)
