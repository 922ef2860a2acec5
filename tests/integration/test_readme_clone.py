"""The README's quick start on a fresh `git clone` of this repository, offline with the user's
mirror file: `make setup-yolov7 && make cam`, then the `make cam` whose ARGS name paths, each as
the README writes it (plus `PYTHON=`, the README's own-environment variant, so that no torch is
installed: a throwaway venv that sees this interpreter's packages). Asserts exit codes and the run
folders' files. yolov7 only; the other upstreams' `make cam` is covered by their own tests."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from scripts.upstream.config import url_and_origin
from scripts.upstream.gitutil import is_reachable

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
OFFLINE_WEIGHTS = "http://kit-no-such-host.invalid/yolov7.pt"  # .invalid never resolves: the demo fallback


def readme_make_commands() -> list[list[str]]:
    """The quick start's `make setup-yolov7 && make cam`, then the `make cam` with WEIGHTS=demo."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    quick = next(b for b in blocks if b.strip() == "make setup-yolov7 && make cam")
    paths = next(b for b in blocks if "make cam WEIGHTS=demo SOURCE=data/demo/sample/images" in b)
    return [shlex.split(part) for part in quick.split("&&")] + [shlex.split(paths)]


def throwaway_python(folder: Path) -> str:
    """A venv that sees this interpreter's packages (a .pth line), so pip installs only the kit."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    site = next((folder / "lib").glob("python*/site-packages"))
    (site / "kit-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return str(folder / "bin" / "python")


def test_the_quick_start_runs_on_a_fresh_clone(tmp_path: Path) -> None:
    url, origin = url_and_origin("yolov7")
    ok, why = is_reachable(url)
    if not ok:
        pytest.skip(f"yolov7 is not reachable at {url} ({origin}): {why}")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    clone = tmp_path / "kit-clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True, timeout=300)
    python = throwaway_python(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "PYTHON"))}
    env.update(KIT_YOLOV7_WEIGHTS_URL=OFFLINE_WEIGHTS, PIP_DISABLE_PIP_VERSION_CHECK="1")
    for words in readme_make_commands():
        assert words[0] == "make", words
        # as written, but the deletion/insertion curves of --eval cost minutes per map on a CPU: two
        words = [w + " --eval-curves 2" if w.startswith("ARGS=--eval") else w for w in words]
        done = subprocess.run(
            [*words, f"PYTHON={python}"], cwd=clone, env=env, capture_output=True, text=True, timeout=1800
        )
        assert done.returncode == 0, f"{shlex.join(words)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    first, second = clone / "runs/cam/yolov7/exp", clone / "runs/cam/yolov7/exp2"
    for run in (first, second):
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["finished"] and len(manifest["images"]) == 8 and (run / "index.html").is_file()
    assert (second / "eval.json").is_file()  # ARGS' --eval data/demo/sample/labels, read from the clone
    assert f"run folder {second} (open index.html)" in done.stderr and "missed " in done.stderr
