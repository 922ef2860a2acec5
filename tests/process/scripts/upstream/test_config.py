"""upstreams.yaml validation, URL overrides and reachability (scripts.upstream: config, gitutil)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.__main__ import main
from scripts.upstream.config import (
    checkout_path,
    load_project,
    resolve_url,
    url_and_origin,
    url_env_var,
    user_config_path,
)
from scripts.upstream.errors import ConfigError
from scripts.upstream.gitutil import is_local_url, is_reachable, no_git_env
from tests.fixture_repos import Upstream

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


def test_the_repos_own_upstreams_yaml_is_valid() -> None:
    project = load_project(REAL_CONFIG)
    assert set(project.upstreams) == {"yolov3", "yolov5", "yolov7", "detectron2"}
    for upstream in project.upstreams.values():
        assert len(upstream.commit) == 40
        assert all(p.is_file() for p in project.patch_paths(upstream.name))


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


# --- URL overrides ---------------------------------------------------------------------------------


def test_env_var_name() -> None:
    assert url_env_var("yolov7") == "KIT_YOLOV7_URL"
    assert url_env_var("my-det") == "KIT_MY_DET_URL"


def write_user_file(base: Path, text: str) -> Path:
    path = base / "xdg" / "kit" / "upstreams.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_url_precedence_env_then_user_file_then_yaml(
    isolated: Path,
    project: Path,
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = load_project(project)
    assert url_and_origin("demo", loaded) == (str(upstream.path), str(project))
    user_file = write_user_file(isolated, "demo:\n  url: /srv/mirror/demo\n")
    assert user_config_path() == user_file
    assert url_and_origin("demo", loaded) == ("/srv/mirror/demo", f"user file {user_file}")
    assert resolve_url("other", loaded) == str(upstream.path)  # only the named entry changes
    monkeypatch.setenv("KIT_DEMO_URL", "https://example.com/env/demo")
    assert url_and_origin("demo", loaded) == ("https://example.com/env/demo", "env KIT_DEMO_URL")
    assert loaded.upstream("demo").commit == upstream.pin  # the pin never follows the URL


def test_user_file_relative_path_counts_from_its_folder(isolated: Path, project: Path) -> None:
    user_file = write_user_file(isolated, "demo:\n  url: ../mirrors/demo\n")
    assert resolve_url("demo", load_project(project)) == str(user_file.parent.parent / "mirrors" / "demo")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yolov9:\n  url: /x\n", "'yolov9' is no upstream"),
        ("demo:\n  url: /x\n  commit: abc\n", "only 'url' may be overridden"),
        ("demo: /x\n", "only 'url' may be overridden"),
        ("- demo\n", "expected a mapping"),
        ("demo:\n  url: ''\n", "non-empty string"),
    ],
)
def test_user_file_is_validated(isolated: Path, project: Path, text: str, expected: str) -> None:
    path = write_user_file(isolated, text)
    with pytest.raises(ConfigError, match=expected) as info:
        resolve_url("demo", load_project(project))
    assert str(path) in str(info.value)


HOSTILE_USER_FILES = {
    "tag": (
        'demo: {url: !!python/object/apply:os.system ["touch MARKER"]}\n',
        "line 1: the tag !!python/object",
    ),
    "alias": ("a: &a [x, x, x]\nb: &b [*a, *a, *a]\ndemo: {url: /x}\n", "line 1: an anchor (&a / *a)"),
    "deep": ("demo: " + "[" * 60_000 + "\n", "nested more than 50 levels deep"),
    "big": ("demo: {url: /x}\n" + "#" * 70_000 + "\n", "larger than 65536 bytes"),
    "latin-1": ("demo: {url: /caf\u00e9}\n", "is not UTF-8 text (byte 0xe9"),
    "repeated": ("demo: {url: /a}\ndemo: {url: /b}\n", "line 2: the key 'demo' is given twice"),
}


@pytest.mark.parametrize("case", list(HOSTILE_USER_FILES))
def test_hostile_user_files_are_refused_naming_the_file(
    isolated: Path, project: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The user's upstreams.yaml override is read as data (kit.upstreams.safeyaml); every refusal is a
    ConfigError naming the file, and `python -m scripts` exits 2 with one line."""
    text, expected = HOSTILE_USER_FILES[case]
    marker = isolated / "ran"
    path = write_user_file(isolated, "")
    encoding = "latin-1" if case == "latin-1" else "utf-8"
    path.write_bytes(text.replace("MARKER", str(marker)).encode(encoding))
    with pytest.raises(ConfigError) as info:
        resolve_url("demo", load_project(project))
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)
    assert not marker.exists()
    assert main(["--config", str(project), "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and "Traceback" not in err, err


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


def test_checkout_path_precedence(isolated: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_project(project)
    assert checkout_path(loaded, "demo") == isolated / "checkouts" / "demo"
    assert checkout_path(loaded, "demo", root=isolated / "r") == isolated / "r" / "upstreams" / "demo"
    monkeypatch.delenv("KIT_UPSTREAMS_DIR")
    assert checkout_path(loaded, "demo") == loaded.root / "upstreams" / "demo"


# --- git helpers -----------------------------------------------------------------------------------


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


def test_is_reachable(isolated: Path, upstream: Upstream) -> None:
    assert is_reachable(str(upstream.path))[0]
    assert is_reachable(f"file://{upstream.path}")[0]
    ok, reason = is_reachable(str(isolated / "missing"))
    assert not ok and "does not exist" in reason
    (isolated / "not-a-repo").mkdir()
    ok, reason = is_reachable(str(isolated / "not-a-repo"))
    assert not ok and "ls-remote" in reason
