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
    user_config_path,
)
from scripts.upstream.errors import ConfigError
from scripts.upstream.gitutil import is_reachable
from tests.fixture_repos import Upstream

# --- URL overrides ---------------------------------------------------------------------------------


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


def test_checkout_path_precedence(isolated: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_project(project)
    assert checkout_path(loaded, "demo") == isolated / "checkouts" / "demo"
    assert checkout_path(loaded, "demo", root=isolated / "r") == isolated / "r" / "upstreams" / "demo"
    monkeypatch.delenv("KIT_UPSTREAMS_DIR")
    assert checkout_path(loaded, "demo") == loaded.root / "upstreams" / "demo"


# --- git helpers -----------------------------------------------------------------------------------


def test_is_reachable(isolated: Path, upstream: Upstream) -> None:
    assert is_reachable(str(upstream.path))[0]
    assert is_reachable(f"file://{upstream.path}")[0]
    ok, reason = is_reachable(str(isolated / "missing"))
    assert not ok and "does not exist" in reason
    (isolated / "not-a-repo").mkdir()
    ok, reason = is_reachable(str(isolated / "not-a-repo"))
    assert not ok and "ls-remote" in reason
