"""upstreams.yaml validation, URL overrides and reachability (scripts.upstream: config, gitutil)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.__main__ import main
from scripts.upstream.config import (
    load_project,
    url_env_var,
    user_config_path,
)
from scripts.upstream.errors import ConfigError
from scripts.upstream.gitutil import is_local_url, no_git_env

REAL_CONFIG = Path(__file__).resolve().parents[4] / "upstreams.yaml"


PIN = "a207844b1ce82d204ab36d87d496728d3d2348e7"


def write_entry(root: Path, body: str, patches: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in patches:
        (root / "patches" / "demo").mkdir(parents=True, exist_ok=True)
        (root / "patches" / "demo" / name).write_text("x\n", encoding="utf-8")
    path = root / "upstreams.yaml"
    path.write_text("demo:\n" + body, encoding="utf-8")
    return path


GOOD = (
    f"  url: https://example.com/demo\n  commit: {PIN}\n  patches: []\n  entry_point: entrypoints/demo.py\n"
)
SHA256 = "c7a0ebb21d10f1de98682b6a4dc22bc0d1d0634b9398c086bd03b1e5bf40cbc3"
SDIST = (
    f"  package: demo-pkg\n  version: '1.2.3'\n  sha256: {SHA256}\n  patches: []\n  entry_point: e/demo.py\n"
)


def test_the_repos_own_upstreams_yaml_is_valid() -> None:
    project = load_project(REAL_CONFIG)
    assert set(project.upstreams) == {"yolov3", "yolov5", "yolov7", "detectron2", "ultralytics"}
    for upstream in project.upstreams.values():
        assert len(upstream.commit) == (0 if upstream.kind == "sdist" else 40)
        assert all(p.is_file() for p in project.patch_paths(upstream.name))
    ultralytics = project.upstream("ultralytics")
    assert (ultralytics.kind, ultralytics.package, ultralytics.version, ultralytics.url) == (
        "sdist",
        "ultralytics",
        "8.4.190",
        "",
    )
    assert ultralytics.sha256 == "c7a0ebb21d10f1de98682b6a4dc22bc0d1d0634b9398c086bd03b1e5bf40cbc3"
    # every requirement is pinned at the version constraints.txt pins
    pins = {line.split("==")[0].lower(): line for line in project.constraints.read_text().split()}
    for upstream in project.upstreams.values():
        assert all(pins[r.split("==")[0].lower()] == r for r in upstream.requirements), upstream.name


def test_minimal_entry_gets_empty_defaults(tmp_path: Path) -> None:
    project = load_project(write_entry(tmp_path, GOOD))
    demo = project.upstream("demo")
    assert (demo.exclude, demo.requirements, demo.patches) == ((), (), ())
    assert project.root == tmp_path.resolve()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (GOOD + "  patch: []\n", ["'demo'", "unknown key 'patch'", "allowed keys"]),
        (GOOD.replace(PIN, PIN[:12]), ["'demo'", "'commit'", "not a full 40-hex", "rev-parse"]),
        (GOOD.replace(PIN, PIN.upper()), ["'commit'", "not a full 40-hex"]),
        (GOOD.replace(PIN, "main"), ["'commit'", "'main'", "never a branch"]),
        (GOOD.replace(PIN, "1" * 40), ["'commit'", "not a string", "quotes"]),
        (
            GOOD.replace("patches: []", "patches: [0001-missing.patch]"),
            ["patches/demo/0001-missing.patch", "does not exist", "remove it"],
        ),
        (GOOD.replace("patches: []", "patches: 0001-x.patch"), ["'patches'", "expected a list"]),
        (GOOD.replace("  url: https://example.com/demo\n", ""), ["'demo'", "missing required key 'url'"]),
        (GOOD.replace(f"  commit: {PIN}\n", ""), ["missing required key 'commit'"]),
        (GOOD.replace("  patches: []\n", ""), ["missing required key 'patches'"]),
        (GOOD.replace("  entry_point: entrypoints/demo.py\n", ""), ["missing required key 'entry_point'"]),
        (GOOD + "  requirements: [numpy]\n", ["'requirements'", "'numpy'", "name==version"]),
        (GOOD + "  requirements: ['numpy>=2']\n", ["'numpy>=2'", "not pinned"]),
        (GOOD + "  exclude: ['!paper/']\n", ["'exclude'", "no '!'"]),
        (GOOD.replace("entrypoints/demo.py", "/abs/demo.py"), ["'entry_point'", "inside the project"]),
        (GOOD.replace("entrypoints/demo.py", "../demo.py"), ["'entry_point'", "inside the project"]),
        (GOOD.replace("url: https://example.com/demo", "url: ''"), ["'url'", "non-empty string"]),
    ],
)
def test_invalid_entries_raise_config_error_naming_entry_and_key(
    tmp_path: Path, body: str, expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_project(write_entry(tmp_path, body))
    message = str(info.value)
    assert str(tmp_path / "upstreams.yaml") in message
    for part in expected:
        assert part in message


def test_an_sdist_entry_pins_package_version_and_sha256_and_needs_no_url(tmp_path: Path) -> None:
    demo = load_project(write_entry(tmp_path, SDIST)).upstream("demo")
    assert (demo.kind, demo.package, demo.version, demo.sha256) == ("sdist", "demo-pkg", "1.2.3", SHA256)
    assert (demo.url, demo.commit, demo.pin_label) == ("", "", "demo-pkg==1.2.3 (sdist sha256 c7a0ebb21d10)")
    mirrored = load_project(write_entry(tmp_path, SDIST + "  url: mirror/\n")).upstream("demo")
    assert mirrored.url == str(tmp_path.resolve() / "mirror")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (SDIST.replace("'1.2.3'", "1.2"), ["'version'", "1.2", "in quotes", "never a range"]),
        (SDIST.replace("'1.2.3'", "'>=1.2'"), ["'version'", "'>=1.2'", "one exact release"]),
        (SDIST.replace("'1.2.3'", "latest"), ["'version'", "'latest'"]),
        (SDIST.replace("'1.2.3'", "'1.2.3+local'"), ["'version'", "'1.2.3+local'"]),
        (SDIST.replace("'1.2.3'", "'01.2'"), ["'version'", "'01.2'"]),
        (SDIST.replace(SHA256, SHA256[:12]), ["'sha256'", "64-hex", "sha256sum"]),
        (SDIST.replace(SHA256, SHA256.upper()), ["'sha256'", "lowercase"]),
        (SDIST.replace(SHA256, "1" * 64), ["'sha256'", "1111111111"]),
        (SDIST.replace("demo-pkg", "'../evil'"), ["'package'", "'../evil'", "package name"]),
        (SDIST.replace("demo-pkg", "'demo pkg'"), ["'package'", "'demo pkg'"]),
        (SDIST.replace(f"  sha256: {SHA256}\n", ""), ["missing required key 'sha256'"]),
        (SDIST.replace("  version: '1.2.3'\n", ""), ["missing required key 'version'"]),
        (SDIST + f"  commit: {PIN}\n", ["'commit'", "either a git commit", "not both"]),
        (GOOD + f"  sha256: {SHA256}\n", ["missing required key 'package'"]),
        (SDIST + "  url: ''\n", ["'url'", "non-empty string"]),
    ],
)
def test_invalid_sdist_entries_are_refused_naming_the_key(
    tmp_path: Path, body: str, expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_project(write_entry(tmp_path, body))
    message = str(info.value)
    assert str(tmp_path / "upstreams.yaml") in message and "'demo'" in message
    for part in expected:
        assert part in message
    assert main(["--config", str(tmp_path / "upstreams.yaml"), "status"]) == 2


def test_existing_patch_file_is_accepted(tmp_path: Path) -> None:
    body = GOOD.replace("patches: []", "patches: [0001-x.patch]")
    project = load_project(write_entry(tmp_path, body, patches=("0001-x.patch",)))
    assert project.patch_paths("demo") == [tmp_path.resolve() / "patches" / "demo" / "0001-x.patch"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "expected a mapping"),
        ("- a\n- b\n", "expected a mapping"),
        ("demo: [1, 2]\n", "expected a mapping with keys"),
        ("Demo:\n" + GOOD, "must match"),
        ("demo: {url: [\n", "not valid YAML"),
    ],
)
def test_invalid_files_raise_config_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "upstreams.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        load_project(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_project(tmp_path / "nope.yaml")


def test_unknown_upstream_name_lists_the_known_ones(tmp_path: Path) -> None:
    project = load_project(write_entry(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="no upstream named 'yolov9'.*known: demo"):
        project.upstream("yolov9")


def test_relative_local_url_counts_from_the_project_root(tmp_path: Path) -> None:
    project = load_project(write_entry(tmp_path, GOOD.replace("https://example.com/demo", "mirrors/demo")))
    assert project.upstream("demo").url == str(tmp_path.resolve() / "mirrors" / "demo")


def test_env_var_name() -> None:
    assert url_env_var("yolov7") == "KIT_YOLOV7_URL"
    assert url_env_var("my-det") == "KIT_MY_DET_URL"


def test_a_hostile_project_file_is_refused_naming_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write_entry(tmp_path, f'  url: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match=f"{path}, line 2: the tag !!python/object/apply:os.system"):
        load_project(path)
    assert not marker.exists()
    assert main(["--config", str(path), "status"]) == 2


def test_user_file_falls_back_to_home_config(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert user_config_path() == isolated / "home" / ".config" / "kit" / "upstreams.yaml"


def test_no_git_env_strips_repository_variables() -> None:
    env = no_git_env(
        {
            "GIT_DIR": "/x",
            "GIT_INDEX_FILE": "/y",
            "GIT_CONFIG_COUNT": "1",
            "GIT_SSH_COMMAND": "ssh",
            "PATH": "/bin",
        }
    )
    assert env == {"GIT_SSH_COMMAND": "ssh", "PATH": "/bin"}


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("/srv/mirror", True),
        ("file:///srv/mirror", True),
        ("mirrors/x", True),
        ("https://github.com/a/b", False),
        ("ssh://git@host/a", False),
        ("git@github.com:a/b.git", False),
    ],
)
def test_is_local_url(url: str, local: bool) -> None:
    assert is_local_url(url) is local
