"""`check-patches`: every series applies to its pin strictly, and every patch says why it exists.

Strict means plain `git apply --check`: no 3-way merge, no fuzz (Yocto and dpkg apply the same
rule). The check runs in a scratch bare repository with a temporary index, so no checkout is
touched and only the blobs the patches touch are fetched.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.upstream import command
from scripts.upstream.config import Project, load_project, url_and_origin
from scripts.upstream.errors import KitSetupError
from scripts.upstream.gitutil import git
from scripts.upstream.patchfile import dep3_problems, failed_paths
from scripts.upstream.source import PIP_INDEX, bring_pin, init_repo, reachable


@dataclass
class CheckResult:
    name: str
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the apply check did not run
    warnings: list[str] = field(default_factory=list)


def check_patches(
    project: Project | None = None, names: Sequence[str] | None = None, *, strict: bool = False
) -> list[CheckResult]:
    """Check the series of `names` (default: all). With `strict`, an unreachable URL is a problem."""
    project = project if project is not None else load_project()
    results = []
    for name in names or list(project.upstreams):
        upstream = project.upstream(name)
        result = CheckResult(name=name)
        paths = project.patch_paths(name)
        for path in paths:
            result.problems += [f"{_rel(project, path)}: {p}" for p in dep3_problems(path)]
        listed = set(upstream.patches)
        for stray in sorted(project.patch_dir(name).glob("*.patch")):
            if stray.name not in listed:
                result.warnings.append(
                    f"{_rel(project, stray)} is not in the series of {name}; it is not checked"
                )
        if paths:
            url, origin = url_and_origin(name, project)
            ok, reason = reachable(upstream, url, origin=origin, python=sys.executable)
            if not ok:
                message = f"cannot reach {url or PIP_INDEX}: {reason}"
                if strict:
                    result.problems.append(message)
                else:
                    result.skipped = message
            else:
                result.problems += _apply_strictly(project, name, (url, origin), paths)
        results.append(result)
    return results


def _rel(project: Project, path: Path) -> str:
    return str(path.relative_to(project.root))


def _apply_strictly(project: Project, name: str, source: tuple[str, str], paths: Sequence[Path]) -> list[str]:
    upstream = project.upstream(name)
    url, origin = source
    with tempfile.TemporaryDirectory(prefix=f"kit-check-{name}-") as tmp:
        repo = Path(tmp) / "repo.git"
        init_repo(repo, upstream, url=url, bare=True)
        try:
            pin = bring_pin(repo, upstream, url=url, origin=origin, python=sys.executable, depth=1)
        except KitSetupError as e:
            return [f"{name}: cannot fetch the pin {upstream.pin_label}: {e}"]
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git("read-tree", pin, cwd=repo, env=index)
        for path in paths:
            for step in (["--check"], []):
                result = git(
                    "apply",
                    "--cached",
                    "--whitespace=nowarn",
                    *step,
                    str(path),
                    cwd=repo,
                    env=index,
                    check=False,
                )
                if result.returncode != 0:
                    files = ", ".join(failed_paths(result.stderr)) or "unknown file"
                    where = f"{name} at {pin[:12]} after the patches before it"
                    return [
                        f"{_rel(project, path)} does not apply strictly to {where}; failed on: {files}\n"
                        + result.stderr.strip()
                    ]
    return []


def format_results(results: Sequence[CheckResult]) -> str:
    lines = []
    for r in results:
        if r.problems:
            lines.append(f"{r.name}: FAILED")
            lines += [f"  {p}" for p in r.problems]
        elif r.skipped:
            lines.append(f"{r.name}: skipped: {r.skipped} (headers checked; --strict makes this an error)")
        else:
            lines.append(f"{r.name}: ok")
        lines += [f"  warning: {w}" for w in r.warnings]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """`python -m scripts check-patches` (`make check-patches`): exit 1 when any series has a problem."""
    parser = command.parser("check-patches", "every series applies strictly to its pin")
    parser.add_argument("names", nargs="*", help="upstreams to check (default: all)")
    parser.add_argument(
        "--strict", action="store_true", help="an unreachable upstream is an error, not a skip"
    )
    args = parser.parse_args(argv)

    def body() -> int:
        results = check_patches(load_project(args.config), args.names, strict=args.strict)
        print(format_results(results))
        return 1 if any(r.problems for r in results) else 0

    return command.run(body)
