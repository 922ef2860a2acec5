"""Local fixture repositories and projects for the setup-engine tests (no network).

Modelled on pre-commit's tests/store_test.py: every test builds its own small upstream repo,
patch series and upstreams.yaml under tmp_path. The fixtures built from these (`isolated`,
`upstream`, `project`) are in this folder's conftest.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

import scripts.upstream.config

# Fixture commits never depend on the machine: fixed people, fixed dates, no user config.
_FIXED = {
    "GIT_AUTHOR_NAME": "Upstream Dev",
    "GIT_AUTHOR_EMAIL": "dev@upstream.example",
    "GIT_COMMITTER_NAME": "Upstream Dev",
    "GIT_COMMITTER_EMAIL": "dev@upstream.example",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
}
# The flags refresh-patches uses, spelled out here so the fixture does not depend on the engine.
FORMAT_PATCH_FLAGS = (
    "--stdout",
    "--zero-commit",
    "--full-index",
    "--no-signature",
    "--no-stat",
    "--keep-subject",
    "--binary",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)
MODEL_LINES = [f"value_{i} = {i}\n" for i in range(1, 31)]


def run_git(
    *args: str, cwd: Path | None = None, date: str = "2024-01-01T00:00:00+00:00", stdin: bytes = b""
) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_FIXED, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.decode()}")
    return proc.stdout.decode("utf-8", "surrogateescape").strip()


def git_bytes(*args: str, cwd: Path) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_FIXED)
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True).stdout


def write_files(root: Path, files: Mapping[str, str | bytes | None]) -> None:
    for rel, content in files.items():
        path = root / rel
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def pseudo_random_bytes(size: int, seed: str = "paper") -> bytes:
    out = bytearray()
    block = seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


@dataclass
class Upstream:
    """A fixture upstream repository: three commits, the last one is the usual pin."""

    path: Path
    commits: list[str] = field(default_factory=list)

    @property
    def pin(self) -> str:
        return self.commits[-1]

    def blob(self, rev: str, rel: str) -> str:
        return run_git("rev-parse", f"{rev}:{rel}", cwd=self.path)


def make_upstream(path: Path) -> Upstream:
    """README, src/model.py, a big binary under paper/ and notebooks under tools/ (to be excluded)."""
    run_git("init", "--quiet", "--initial-branch=main", str(path))
    up = Upstream(path)
    write_files(
        path,
        {
            "README.md": "# demo upstream\n\nA detector.\n",
            "src/model.py": "".join(MODEL_LINES),
            "paper/paper.pdf": pseudo_random_bytes(200_000),
            "tools/demo.ipynb": '{"cells": []}\n',
            "tools/helper.py": "def helper():\n    return 1\n",
            "data/crlf.txt": b"one\r\ntwo\r\nthree\r\n",
        },
    )
    for i, (files, message) in enumerate(
        [
            ({}, "initial"),
            (
                {"src/model.py": "".join(MODEL_LINES[:25]) + "changed_26 = 26\n" + "".join(MODEL_LINES[26:])},
                "tune",
            ),
            ({"tools/helper.py": "def helper():\n    return 2\n"}, "helper returns 2"),
        ]
    ):
        write_files(path, files)
        run_git("add", "-A", cwd=path)
        run_git("commit", "--quiet", "-m", message, cwd=path, date=f"2024-01-0{i + 1}T00:00:00+00:00")
        up.commits.append(run_git("rev-parse", "HEAD", cwd=path))
    return up


class PatchBench:
    """Makes a patch series against `base`: each `commit()` builds on the previous one."""

    def __init__(self, upstream: Upstream, base: str, work: Path) -> None:
        run_git("clone", "--quiet", "--no-checkout", str(upstream.path), str(work))
        run_git("checkout", "--quiet", "--detach", base, cwd=work)
        self.work = work
        self.count = 0

    def commit(
        self,
        files: Mapping[str, str | bytes | None],
        subject: str,
        *,
        description: str | None = "Needed by the kit.",
        status: str | None = "Inappropriate [kit-specific]",
    ) -> bytes:
        self.count += 1
        write_files(self.work, files)
        body = [subject, ""]
        if description is not None:
            body.append(f"Description: {description}")
        body.append("Origin: vendor")
        if status is not None:
            body.append(f"Upstream-Status: {status}")
        run_git("add", "-A", cwd=self.work)
        run_git(
            "-c",
            "user.name=Kit Dev",
            "-c",
            "user.email=kit-dev@example.com",
            "commit",
            "--quiet",
            "--author=Kit Dev <kit-dev@example.com>",
            "-m",
            "\n".join(body) + "\n",
            cwd=self.work,
            date=f"2024-02-{self.count:02d}T12:00:00+01:00",
        )
        return git_bytes("format-patch", *FORMAT_PATCH_FLAGS, "-1", "HEAD", cwd=self.work)


def model_with(changes: Mapping[int, str]) -> str:
    """src/model.py of the pin with lines (1-based) replaced."""
    lines = list(MODEL_LINES)
    lines[25] = "changed_26 = 26\n"
    for number, text in changes.items():
        lines[number - 1] = text
    return "".join(lines)


def standard_series(upstream: Upstream, work: Path) -> dict[str, bytes]:
    """Two patches against the pin: edit src/model.py; add a file and edit README.md."""
    bench = PatchBench(upstream, upstream.pin, work)
    first = bench.commit({"src/model.py": model_with({5: "value_5 = 50  # kit\n"})}, "model: value_5 is 50")
    second = bench.commit(
        {"src/kit_hook.py": "HOOKED = True\n", "README.md": "# demo upstream\n\nA detector, patched.\n"},
        "Add the kit hook",
    )
    return {"0001-model-value_5-is-50.patch": first, "0002-Add-the-kit-hook.patch": second}


def yaml_list(items: Sequence[str]) -> str:
    if not items:
        return " []\n"
    return "\n" + "".join(f"    - {item}\n" for item in items)


def write_project(
    root: Path,
    *,
    url: str,
    commit: str,
    patches: Mapping[str, bytes],
    name: str = "demo",
    exclude: Sequence[str] = ("paper/", "tools/*.ipynb"),
    requirements: Sequence[str] = ("tqdm==4.70.1",),
    entry_point: str | None = "print('cam')\n",
) -> Path:
    """A project root with upstreams.yaml (with comments), patches/<name>/, an entry point and constraints."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "patches" / name).mkdir(parents=True, exist_ok=True)
    for file_name, data in patches.items():
        (root / "patches" / name / file_name).write_bytes(data)
    if entry_point is not None:
        write_files(root, {f"entrypoints/{name}_main_gradcam.py": entry_point})
    (root / "constraints.txt").write_text("tqdm==4.70.1\n", encoding="utf-8")
    text = (
        "# Fixture upstreams (comments must survive refresh-patches)\n"
        f"{name}:\n"
        f"  url: {url}  # a local fixture repo\n"
        f"  commit: {commit}\n"
        f"  patches:{yaml_list(list(patches))}"
        f"  exclude: {json.dumps(list(exclude))}\n"
        f"  requirements: {json.dumps(list(requirements))}\n"
        f"  entry_point: entrypoints/{name}_main_gradcam.py\n"
        "\n"
        "# another entry, untouched by every test\n"
        "other:\n"
        f"  url: {url}\n"
        f"  commit: {commit}\n"
        "  patches: []  # none\n"
        "  entry_point: entrypoints/other_main_gradcam.py\n"
    )
    (root / "upstreams.yaml").write_text(text, encoding="utf-8")
    return root / "upstreams.yaml"


def make_mirror_without(source: Path, dest: Path, left_out_prefix: str) -> list[str]:
    """A bare copy of `source` whose object store lacks every blob under `left_out_prefix`, like a
    mirror that skipped big files. Returns the SHAs of the blobs left out."""
    run_git("init", "--quiet", "--bare", str(dest))
    listing = run_git("rev-list", "--objects", "--all", cwd=source).splitlines()
    keep, dropped = [], []
    for line in listing:
        sha, _, path = line.partition(" ")
        (dropped if path.startswith(left_out_prefix) else keep).append(sha)
    run_git(
        "pack-objects",
        "--quiet",
        str(dest / "objects" / "pack" / "pack"),
        cwd=source,
        stdin=("\n".join(keep) + "\n").encode(),
    )
    for ref_line in run_git("for-each-ref", "--format=%(objectname) %(refname)", cwd=source).splitlines():
        sha, ref = ref_line.split(" ", 1)
        run_git("update-ref", ref, sha, cwd=dest)
    run_git("symbolic-ref", "HEAD", "refs/heads/main", cwd=dest)
    return dropped


def tree_snapshot(repo: Path) -> dict[str, bytes]:
    """Every file of a work tree (outside .git) with its bytes, for before/after comparisons."""
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real upstreams.yaml, no real upstreams/, no user override file or cache, no KIT_*_URL, and a hostile
    ~/.gitconfig that would change commit ids or patch bytes if the engine let user config leak."""
    for key in list(os.environ):
        if key.startswith("KIT_") or key.startswith("GIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setattr(scripts.upstream.config, "REPO_ROOT", tmp_path / "no-real-repo-root")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the sdist cache: never the user's
    monkeypatch.setenv("KIT_UPSTREAMS_DIR", str(tmp_path / "checkouts"))
    home = tmp_path / "home"
    home.mkdir()
    hooks = home / "hooks"
    hooks.mkdir()
    (hooks / "applypatch-msg").write_text('#!/bin/sh\necho hooked >> "$1"\n', encoding="utf-8")
    (hooks / "applypatch-msg").chmod(0o755)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Someone Else\n\temail = else@example.com\n"
        f"[core]\n\thooksPath = {hooks}\n\tautocrlf = true\n"
        "[am]\n\tmessageid = true\n\tkeepcr = false\n"
        "[commit]\n\tgpgsign = true\n"
        "[diff]\n\tnoprefix = true\n\tcontext = 5\n"
        "[format]\n\tsignOff = true\n\tnumbered = true\n\tsignature = evil\n\tuseAutoBase = true\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("HOME", str(home))
    return tmp_path


# --- sdists: a package's source archive, as the index serves it ------------------------------------

SDIST_NAME = "demo-pkg"
SDIST_VERSION = "1.0.0"


def sdist_files(version: str = SDIST_VERSION) -> dict[str, str | bytes]:
    """The files of the fixture sdist (below its top folder): a setuptools project with a package."""
    return {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {SDIST_NAME}\nVersion: {version}\n",
        "pyproject.toml": (
            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{SDIST_NAME}"\nversion = "{version}"\n\n'
            '[tool.setuptools]\npackages = ["demo_pkg"]\n'
        ),
        "README.md": "# demo upstream\n\nA detector.\n",
        "demo_pkg/__init__.py": f'__version__ = "{version}"\n',
        "demo_pkg/model.py": "".join(MODEL_LINES),
        "demo_pkg/run.sh": "#!/bin/sh\necho run\n",  # executable in the archive
        "data/crlf.txt": b"one\r\ntwo\r\nthree\r\n",
    }


def tar_member(
    name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 1_700_000_000
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def write_tar_gz(path: Path, members: Sequence[tuple[tarfile.TarInfo, bytes]]) -> str:
    """Write `members` as a .tar.gz at `path`; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sdist_members(
    files: Mapping[str, str | bytes], *, top: str = f"{SDIST_NAME}-{SDIST_VERSION}"
) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The members of an sdist holding `files` under `top/`, with its folders, as setuptools writes."""
    members = [tar_member(top, kind=tarfile.DIRTYPE, mode=0o755)]
    folders = sorted({str(PurePosixPath(rel).parent) for rel in files} - {"."})
    members += [tar_member(f"{top}/{d}", kind=tarfile.DIRTYPE, mode=0o755) for d in folders]
    for rel, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        members.append(tar_member(f"{top}/{rel}", data, mode=0o755 if rel.endswith(".sh") else 0o644))
    return members


def make_sdist(folder: Path, version: str = SDIST_VERSION) -> tuple[Path, str]:
    """`folder/demo-pkg-<version>.tar.gz`, the fixture sdist; returns its path and sha256."""
    path = folder / f"{SDIST_NAME}-{version}.tar.gz"
    return path, write_tar_gz(path, sdist_members(sdist_files(version), top=f"{SDIST_NAME}-{version}"))


def sdist_as_repo(path: Path, version: str = SDIST_VERSION) -> Upstream:
    """A git repo holding the fixture sdist's files (for PatchBench: patches against its base)."""
    run_git("init", "--quiet", "--initial-branch=main", str(path))
    write_files(path, sdist_files(version))
    run_git("add", "-A", cwd=path)
    run_git("commit", "--quiet", "-m", "sdist", cwd=path)
    return Upstream(path, [run_git("rev-parse", "HEAD", cwd=path)])


def write_sdist_project(
    root: Path, *, sha256: str, patches: Mapping[str, bytes], version: str = SDIST_VERSION
) -> Path:
    """A project root whose 'demo' upstream is the fixture sdist (no url: the override names it)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "patches" / "demo").mkdir(parents=True, exist_ok=True)
    for file_name, data in patches.items():
        (root / "patches" / "demo" / file_name).write_bytes(data)
    write_files(root, {"entrypoints/demo_main_gradcam.py": "print('cam')\n"})
    (root / "constraints.txt").write_text("tqdm==4.70.1\n", encoding="utf-8")
    text = (
        "# Fixture upstreams: an sdist\n"
        "demo:\n"
        f"  package: {SDIST_NAME}\n"
        f'  version: "{version}"\n'
        f"  sha256: {sha256}\n"
        "  requirements: [tqdm==4.70.1]\n"
        "  entry_point: entrypoints/demo_main_gradcam.py\n"
        f"  patches:{yaml_list(list(patches))}"
    )
    (root / "upstreams.yaml").write_text(text, encoding="utf-8")
    return root / "upstreams.yaml"
