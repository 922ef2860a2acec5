"""Install into an interpreter (the kit editable, pinned requirements) and the entry point into a checkout.

Every pip call goes through `-c constraints.txt`, so the same inputs give the same versions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.upstream import command
from scripts.upstream.config import Project, Upstream, load_project
from scripts.upstream.errors import ConfigError, EntryPointError, InstallError

ENTRY_POINT_NAME = "main_gradcam.py"


def pip_install(python: str, project: Project, args: Sequence[str]) -> None:
    """`python -m pip install -c constraints.txt args...`, with pip's progress on our terminal."""
    cmd = [python, "-m", "pip", "install", "--progress-bar", "on", "-c", str(project.constraints), *args]
    print("+ " + " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise InstallError(f"pip failed (exit {rc}): {' '.join(cmd)}; see pip's message above")


def install_kit(python: str, project: Project, upstream: Upstream, *, checkout: Path | None = None) -> None:
    """The kit itself (editable) plus the upstream's pinned requirements, in one pip run; then, for an
    sdist upstream, its `checkout` editable without dependencies, so that the patched code is what
    `import <package>` runs (with `--no-build-isolation` where `python` has setuptools: offline)."""
    pip_install(python, project, ["-e", str(project.root), *upstream.requirements])
    if upstream.kind == "sdist" and checkout is not None:
        pip_install(python, project, ["--no-deps", *no_build_isolation(python), "-e", str(checkout)])


def no_build_isolation(python: str) -> list[str]:
    """`--no-build-isolation` where `python` has setuptools: pip then builds with it, without the
    index; otherwise [] (pip fetches the build requirements)."""
    probe = subprocess.run(
        [python, "-m", "pip", "show", "--quiet", "setuptools"],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return ["--no-build-isolation"] if probe.returncode == 0 else []


def union_requirements(project: Project, names: Sequence[str]) -> list[str]:
    """The requirements of `names` in order, each once; two pins of one package are an error."""
    seen: dict[str, tuple[str, str]] = {}
    for name in names:
        for req in project.upstream(name).requirements:
            key = req.split("==")[0].split("[")[0].strip().lower().replace("_", "-")
            if key in seen and seen[key][0] != req:
                first, first_name = seen[key]
                raise ConfigError(
                    f"{project.config_path}: {first_name} requires {first} but {name} requires {req}; "
                    "one environment holds one version, so pin the same one in both"
                )
            seen.setdefault(key, (req, name))
    return [req for req, _ in seen.values()]


def install_requirements(python: str, project: Project, names: Sequence[str]) -> list[str]:
    """pip-install the union of the requirements of `names`; returns what it installed."""
    reqs = union_requirements(project, names)
    if reqs:
        pip_install(python, project, reqs)
    else:
        print(f"no requirements listed for {', '.join(names)}; nothing to install")
    return reqs


def entry_point_source(project: Project, upstream: Upstream) -> Path:
    return project.root / upstream.entry_point


def require_entry_point(project: Project, upstream: Upstream) -> Path:
    src = entry_point_source(project, upstream)
    if not src.is_file():
        raise EntryPointError(
            f"entry point {upstream.entry_point!r} of upstream {upstream.name!r} does not exist in "
            f"{project.root}; write it, fix 'entry_point' in {project.config_path.name}, or pass --no-install"
        )
    return src


def install_entry_point(project: Project, upstream: Upstream, checkout: Path) -> str:
    """Copy the entry point to `<checkout>/main_gradcam.py` (mode 755) if it differs, and keep it out of
    the checkout's `git status`. Returns 'installed', 'unchanged' or 'missing'.

    A main_gradcam.py that differs (an older kit's, or one the user edited) is kept beside it as
    `main_gradcam.py.<sha256[:8]>.orig` first: setup never throws away a file it did not write.
    """
    src = entry_point_source(project, upstream)
    if not src.is_file():
        return "missing"
    exclude = checkout / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text(encoding="utf-8").splitlines() if exclude.exists() else []
    wanted = [p for p in (f"/{ENTRY_POINT_NAME}", f"/{ENTRY_POINT_NAME}.*.orig") if p not in lines]
    if wanted:
        exclude.write_text("\n".join([*lines, *wanted]) + "\n", encoding="utf-8")
    dst = checkout / ENTRY_POINT_NAME
    if dst.is_file() and dst.read_bytes() == src.read_bytes() and (dst.stat().st_mode & 0o777) == 0o755:
        return "unchanged"
    if dst.is_file() and dst.read_bytes() != src.read_bytes():
        old = dst.read_bytes()
        kept = dst.with_name(f"{ENTRY_POINT_NAME}.{hashlib.sha256(old).hexdigest()[:8]}.orig")
        if not kept.exists():
            shutil.copy2(dst, kept)
        print(f"{upstream.name}: the previous {ENTRY_POINT_NAME} differed from the kit's; kept as {kept}")
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)
    return "installed"


def main(argv: Sequence[str]) -> int:
    """`python -m scripts install-requirements (<name> | --all)` (`make dev-env` runs it with --all)."""
    parser = command.parser("install-requirements", "pip-install pinned requirements")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("name", nargs="?")
    group.add_argument("--all", action="store_true", help="the union of every upstream's requirements")
    args = parser.parse_args(argv)

    def body() -> int:
        project = load_project(args.config)
        install_requirements(sys.executable, project, list(project.upstreams) if args.all else [args.name])
        return 0

    return command.run(body)
