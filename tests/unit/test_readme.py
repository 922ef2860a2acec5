"""The README's commands as written: every `make` target exists, every `main_gradcam.py` command
line parses with the entry point of the checkout it is typed in, and the paths the quick start
names are those the kit writes (the sample images of `make cam`'s offline fallback, `.venv`)."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest

from kit.cli import entry, paths
from kit.upstreams.registry import get_spec
from scripts.cam import launch

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
MAKEFILE = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")


def shell_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def commands(block: str) -> list[list[str]]:
    """The block's commands as shell words: continuation lines joined, split at `&&`, comments dropped."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words:
                found.append(words)
    return found


def make_targets() -> list[str]:
    names = []
    for line in MAKEFILE.splitlines():
        match = re.match(r"^([A-Za-z0-9_%. -]+):(?!=)", line)
        if match:
            names += match.group(1).split()
    return names


def test_every_make_command_names_a_target_of_the_makefile() -> None:
    targets = make_targets()
    typed = [w[1] for block in shell_blocks() for w in commands(block) if w[0] == "make"]
    assert "setup-yolov7" in typed and "cam" in typed  # the quick start
    for name in typed:
        assert any(fnmatch.fnmatch(name, t.replace("%", "*")) for t in targets), (
            f"make {name}: no such target"
        )


def test_every_entry_point_command_parses_in_its_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.CALLER_CWD_ENV, raising=False)
    parsed = 0
    for block in shell_blocks():
        upstream = "yolov7"
        for words in commands(block):
            if words[0] == "cd" and words[1].startswith("upstreams/"):
                upstream = words[1].split("/")[1]
            if words[0].endswith("python") and words[1:2] == ["main_gradcam.py"]:
                spec = get_spec(upstream)
                assert spec.entry is not None, upstream
                parse = entry.parse_predict if spec.entry.predict_style else entry.parse_yolo
                parse(spec, spec.entry, words[2:])  # argparse exits (SystemExit) on a bad flag
                parsed += 1
    assert parsed >= 4


def test_the_quick_start_names_the_folders_the_kit_writes(tmp_path: Path) -> None:
    images = launch.demo_sample(tmp_path, count=1)
    sample = images.relative_to(tmp_path).as_posix()
    assert sample == "data/demo/sample/images" and f"SOURCE={sample}" in README
    assert (images.parent / "labels").is_dir() and "--eval data/demo/sample/labels" in README
    assert re.search(r"^VENV := \.venv$", MAKEFILE, flags=re.M)
    assert "source .venv/bin/activate" in README and "../../.venv/bin/python main_gradcam.py" in README
