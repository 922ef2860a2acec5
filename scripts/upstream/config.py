"""Load and validate upstreams.yaml; resolve each upstream's URL and checkout directory.

An entry pins its source one of two ways: a git commit (`url`, `commit`) or a package's sdist on
the package index (`package`, `version`, `sha256`; `url` optional, see scripts/upstream/sdist.py).
URL precedence, highest first: env `KIT_<NAME>_URL`, the user file
`${XDG_CONFIG_HOME:-~/.config}/kit/upstreams.yaml` (`<name>: {url: ...}`), then upstreams.yaml.
The pinned commit (or the sdist's sha256) never changes with the URL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core.errors import ConfigFileError
from kit.upstreams.safeyaml import read_yaml
from scripts.upstream.errors import ConfigError
from scripts.upstream.gitutil import normalize_url

REPO_ROOT = Path(__file__).resolve().parents[2]  # scripts/upstream/config.py -> the project root
CONFIG_NAME = "upstreams.yaml"
UPSTREAMS_DIR_ENV = "KIT_UPSTREAMS_DIR"

REQUIRED_KEYS = ("url", "commit", "patches", "entry_point")
OPTIONAL_KEYS = ("exclude", "requirements")
# The keys that pin an sdist instead of a commit (`url` is then optional: pip's configured index).
SDIST_KEYS = ("package", "version", "sha256")
_SHA_RE = re.compile(r"[0-9a-f]{40}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# A project name (PEP 508) and an exact public version in canonical form (PEP 440, no local part).
_PACKAGE_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_NUMBER = r"(0|[1-9][0-9]*)"
_VERSION_RE = re.compile(rf"{_NUMBER}(\.{_NUMBER})*((a|b|rc){_NUMBER})?(\.post{_NUMBER})?")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_PATCH_NAME_RE = re.compile(r"[^/\\]+\.patch")
_REQUIREMENT_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._, -]+\])?\s*==\s*[A-Za-z0-9.*+!_-]+(\s*;.+)?"
)


@dataclass(frozen=True)
class Upstream:
    """One entry of upstreams.yaml, validated."""

    name: str
    url: str
    commit: str
    patches: tuple[str, ...]
    exclude: tuple[str, ...]
    requirements: tuple[str, ...]
    entry_point: str
    # The sdist pin (all three set) instead of `commit` (then ""); `url` may be "": pip's index.
    package: str = ""
    version: str = ""
    sha256: str = ""

    @property
    def kind(self) -> str:
        """'sdist' for a package's source archive from the package index, 'git' for a commit."""
        return "sdist" if self.package else "git"

    @property
    def pin_label(self) -> str:
        """The pin as messages show it: the short SHA, or `package==version (sha256 ...)`."""
        if self.kind == "sdist":
            return f"{self.package}=={self.version} (sdist sha256 {self.sha256[:12]})"
        return self.commit[:12]


@dataclass(frozen=True)
class Project:
    """A project root: upstreams.yaml, patches/<name>/, constraints.txt and the kit sources."""

    root: Path
    config_path: Path
    upstreams: Mapping[str, Upstream]

    def upstream(self, name: str) -> Upstream:
        try:
            return self.upstreams[name]
        except KeyError:
            known = ", ".join(self.upstreams) or "none"
            raise ConfigError(f"no upstream named {name!r} in {self.config_path}; known: {known}") from None

    def patch_dir(self, name: str) -> Path:
        return self.root / "patches" / name

    def patch_paths(self, name: str) -> list[Path]:
        return [self.patch_dir(name) / p for p in self.upstream(name).patches]

    @property
    def constraints(self) -> Path:
        return self.root / "constraints.txt"


def load_project(config_path: Path | str | None = None) -> Project:
    """Read and validate `config_path` (default: this repo's upstreams.yaml).

    Its folder is the project root: patches/, constraints.txt and the kit sources live there.
    """
    path = Path(config_path) if config_path is not None else REPO_ROOT / CONFIG_NAME
    path = path.resolve()
    data = _read_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            f"{path}: expected a mapping of upstream names to entries, got {type(data).__name__}"
        )
    root = path.parent
    upstreams = {}
    for name, entry in data.items():
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ConfigError(f"{path}: upstream name {name!r} must match {_NAME_RE.pattern} (lowercase)")
        upstreams[name] = _validate_entry(path, root, name, entry)
    return Project(root=root, config_path=path, upstreams=upstreams)


def _read_yaml(path: Path) -> Any:
    """The data of the YAML file `path`, read as data only: no tags that build objects, no aliases,
    size and depth bounded (kit.upstreams.safeyaml); every refusal names the file."""
    try:
        return read_yaml(path)
    except ConfigFileError as e:
        raise ConfigError(str(e)) from None


def _validate_entry(path: Path, root: Path, name: str, entry: object) -> Upstream:
    where = f"{path}: upstream {name!r}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(REQUIRED_KEYS)}")
    sdist = any(key in entry for key in SDIST_KEYS)
    allowed = (*REQUIRED_KEYS, *OPTIONAL_KEYS, *SDIST_KEYS)
    for key in entry:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    required = ("patches", "entry_point", *SDIST_KEYS) if sdist else REQUIRED_KEYS
    for key in required:
        if key not in entry:
            raise ConfigError(
                f"{where}: missing required key {key!r}; add it (see the comment atop {path.name})"
            )
    if sdist and "commit" in entry:
        raise ConfigError(
            f"{where}: key 'commit' beside {', '.join(SDIST_KEYS)}: an entry pins either a git commit "
            "(url, commit) or a package's sdist (package, version, sha256), not both"
        )
    package, version, sha256 = _sdist_pin(where, entry) if sdist else ("", "", "")
    url = _string(where, "url", entry["url"]) if "url" in entry else ""
    return Upstream(
        name=name,
        url=normalize_url(url, base=root) if url else "",
        commit="" if sdist else _commit(where, entry["commit"]),
        patches=tuple(_patches(where, root, name, entry["patches"])),
        exclude=tuple(_excludes(where, entry.get("exclude", []))),
        requirements=tuple(_requirements(where, entry.get("requirements", []))),
        entry_point=_entry_point(where, entry["entry_point"]),
        package=package,
        version=version,
        sha256=sha256,
    )


def _commit(where: str, commit: object) -> str:
    if not isinstance(commit, str):
        raise ConfigError(f"{where}: key 'commit': {commit!r} is not a string; write the SHA in quotes")
    if not _SHA_RE.fullmatch(commit):
        raise ConfigError(
            f"{where}: key 'commit': {commit!r} is not a full 40-hex commit SHA in lowercase; "
            "write the whole SHA (git rev-parse <ref>), never a branch, tag or short SHA"
        )
    return commit


def _sdist_pin(where: str, entry: dict[str, object]) -> tuple[str, str, str]:
    """`package`, `version` and `sha256` of an sdist entry, each checked by itself."""
    package, version, sha256 = (entry[key] for key in SDIST_KEYS)
    if not isinstance(package, str) or not _PACKAGE_RE.fullmatch(package):
        raise ConfigError(
            f"{where}: key 'package': {package!r} is not a package name as the index spells it, "
            "e.g. ultralytics (letters, digits, '.', '_', '-')"
        )
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise ConfigError(
            f"{where}: key 'version': {version!r} is not one exact release, e.g. '8.4.190'; "
            "write it in quotes, never a range, a wildcard or 'latest'"
        )
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise ConfigError(
            f"{where}: key 'sha256': {sha256!r} is not the 64-hex sha256 of the archive in lowercase; "
            "copy it from the index's file list (or sha256sum the .tar.gz)"
        )
    return package, version, sha256


def _patches(where: str, root: Path, name: str, value: object) -> list[str]:
    patches = _string_list(where, "patches", value)
    for patch in patches:
        if not _PATCH_NAME_RE.fullmatch(patch):
            raise ConfigError(f"{where}: key 'patches': {patch!r} must be a file name ending in .patch")
        if not (root / "patches" / name / patch).is_file():
            raise ConfigError(
                f"{where}: key 'patches': patches/{name}/{patch} does not exist; "
                "add the file or remove it from the list"
            )
    if len(set(patches)) != len(patches):
        raise ConfigError(f"{where}: key 'patches' lists a file twice; each patch is applied once")
    return patches


def _excludes(where: str, value: object) -> list[str]:
    exclude = _string_list(where, "exclude", value)
    for pattern in exclude:
        if pattern.startswith("!") or not pattern.strip("/"):
            raise ConfigError(
                f"{where}: key 'exclude': {pattern!r} must name paths to leave out, e.g. 'paper/' (no '!')"
            )
    return exclude


def _requirements(where: str, value: object) -> list[str]:
    requirements = _string_list(where, "requirements", value)
    for req in requirements:
        if not _REQUIREMENT_RE.fullmatch(req.strip()):
            raise ConfigError(
                f"{where}: key 'requirements': {req!r} is not pinned; write it as name==version"
            )
    return [r.strip() for r in requirements]


def _entry_point(where: str, value: object) -> str:
    entry_point = _string(where, "entry_point", value)
    if Path(entry_point).is_absolute() or ".." in Path(entry_point).parts:
        raise ConfigError(f"{where}: key 'entry_point': {entry_point!r} must be a path inside the project")
    return entry_point


def _string(where: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: key {key!r}: expected a non-empty string, got {value!r}")
    return value


def _string_list(where: str, key: str, value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: key {key!r}: expected a list of strings, got {value!r}")
    return list(value)


# --- URL overrides ---------------------------------------------------------------------------------


def url_env_var(name: str) -> str:
    """The environment variable that overrides `name`'s URL, e.g. KIT_YOLOV7_URL."""
    return "KIT_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_URL"


def mirror_help(upstream: Upstream) -> str:
    """How to fetch `upstream` from elsewhere (a mirror, a local copy): the two overrides, with an
    example line of the user file. The pin never changes with the URL."""
    name, var = upstream.name, url_env_var(upstream.name)
    if upstream.kind == "sdist":
        archive = f"{upstream.package}-{upstream.version}.tar.gz"
        what = (
            f"the archive {archive}: with PyPI (or your pip index) reachable it is downloaded; "
            f"offline, name a local copy of it, the folder holding it, or an index mirror"
        )
        example = f"/path/to/{archive}"
    else:
        what = "a mirror: a local git folder (a clone of the upstream), a file:// URL or another git URL"
        example = f"/path/to/{name}-mirror"
    return (
        f"To set {name} up offline or from elsewhere, give it {what} (the pin stays the same):\n"
        f"  for one command:  {var}={example} make setup-{name}\n"
        f"  for good: add the line  {name}: {{url: {example}}}  to {user_config_path()}\n"
        "See CONTRIBUTING.md, 'Mirrors and offline use'."
    )


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """`${XDG_CONFIG_HOME:-~/.config}/kit/upstreams.yaml`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or ""
    config_home = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return config_home / "kit" / CONFIG_NAME


def load_user_urls(project: Project, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The URL overrides of the user file (empty if there is no file); validated against `project`."""
    path = user_config_path(environ)
    if not path.is_file():
        return {}
    data = _read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping like 'yolov7: {{url: /path/to/mirror}}'")
    urls = {}
    for name, entry in data.items():
        if name not in project.upstreams:
            known = ", ".join(project.upstreams)
            raise ConfigError(f"{path}: {name!r} is no upstream of {project.config_path}; known: {known}")
        if not isinstance(entry, dict) or set(entry) != {"url"}:
            raise ConfigError(
                f"{path}: upstream {name!r}: only 'url' may be overridden here, got {entry!r}; "
                "pins and patches stay in upstreams.yaml"
            )
        urls[name] = normalize_url(
            _string(f"{path}: upstream {name!r}", "url", entry["url"]), base=path.parent
        )
    return urls


def url_and_origin(
    name: str, project: Project | None = None, *, environ: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """The URL to fetch `name` from and where that URL came from (for messages and status)."""
    project = project if project is not None else load_project()
    env = os.environ if environ is None else environ
    upstream = project.upstream(name)
    var = url_env_var(name)
    if env.get(var):
        return normalize_url(env[var], base=Path.cwd()), f"env {var}"
    user_urls = load_user_urls(project, env)
    if name in user_urls:
        return user_urls[name], f"user file {user_config_path(env)}"
    return upstream.url, str(project.config_path)


def resolve_url(
    name: str, project: Project | None = None, *, environ: Mapping[str, str] | None = None
) -> str:
    """The URL to fetch upstream `name` from: env KIT_<NAME>_URL, else the user file, else upstreams.yaml."""
    return url_and_origin(name, project, environ=environ)[0]


def checkouts_parent(project: Project, root: Path | str | None = None) -> Path:
    """Folder of the checkouts: `<root>/upstreams`, else $KIT_UPSTREAMS_DIR, else `<project>/upstreams`."""
    if root is not None:
        return Path(root).resolve() / "upstreams"
    env_dir = os.environ.get(UPSTREAMS_DIR_ENV)
    if env_dir:
        return Path(env_dir).expanduser().resolve()
    return project.root / "upstreams"


def checkout_path(project: Project, name: str, root: Path | str | None = None) -> Path:
    """Where upstream `name` is checked out (see `checkouts_parent`)."""
    project.upstream(name)
    return checkouts_parent(project, root) / name
