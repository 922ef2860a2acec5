"""Checks every upstream's integration tests share: make cam, run folders, unsafe pickles, and
patched vs unpatched detections.

What differs between upstreams (entry-point flags, checkpoint format, what a run records) is data,
an `Upstream` in each test file; the checks live here once, so every upstream is held to the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scripts.upstream.config import load_project
from tests.integration.conftest import REPO_ROOT, run_child_in_checkout


@dataclass(frozen=True)
class Upstream:
    """One upstream as its integration tests drive it.

    ``cam_args`` go before a test's own ARGS (so a test can override them), ``cam_args_last``
    after (detectron2's ``--opts`` takes the rest of the line). ``manifest`` holds entries every
    run records with those flags; ``detections_per_image`` what ``--max-det`` caps each image at
    (random weights score far more boxes); ``class_name`` the name the test checkpoints give class
    i (None: the upstream's own names). ``unsafe_checkpoint`` is a file name and the upstream's
    checkpoint format (a FORMAT of tests/integration/children/save_unsafe_checkpoint.py) in which
    an object whose unpickling runs a command is written there.
    """

    name: str
    unsafe_checkpoint: tuple[str, str]
    cam_args: tuple[str, ...] = ()
    cam_args_last: tuple[str, ...] = ()
    manifest: Mapping[str, Any] = field(default_factory=dict)
    detections_per_image: int | None = None
    class_name: Callable[[int], str] | None = None

    @property
    def pin(self) -> str:
        """The commit upstreams.yaml pins (the setup engine's file holds it once)."""
        return load_project().upstream(self.name).commit

    @property
    def patches(self) -> int:
        """How many patches its series has."""
        return len(load_project().upstream(self.name).patches)


def assert_series_applied(upstream: Upstream, checkout: Path) -> None:
    """The checkout is the pin plus the patch series, with the entry point installed."""
    log = subprocess.run(
        ["git", "rev-list", f"{upstream.pin}..HEAD"], cwd=checkout, capture_output=True, text=True, check=True
    )
    assert len(log.stdout.split()) == upstream.patches
    assert (checkout / "main_gradcam.py").is_file()


def make_cam(
    upstream: Upstream,
    checkout: Path,
    *,
    weights: Path,
    out: Path,
    source: Path | None = None,
    config: str | None = None,
    args: Sequence[str] = (),
    variables: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """`make cam` as a user runs it, on `checkout` (``config`` is relative to it; ``variables``:
    more make variables, e.g. ``NPROC=2``)."""
    command = [
        "make",
        "--no-print-directory",
        "cam",
        f"PYTHON={sys.executable}",
        f"UPSTREAM={upstream.name}",
        f"WEIGHTS={weights}",
        f"OUT={out}",
        "ARGS=" + " ".join([*upstream.cam_args, *args, *upstream.cam_args_last]),
        *variables,
    ]
    if config is not None:
        command.append(f"CONFIG={checkout / config}")
    if source is not None:
        command.append(f"SOURCE={source}")
    env = {**os.environ, "KIT_UPSTREAMS_DIR": str(checkout.parent)}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)


def check_run(
    upstream: Upstream,
    out: Path,
    *,
    layers: list[str],
    target: str = "class-logit",
    layer_per_level: bool = False,
) -> dict[str, Any]:
    """Check a successful run folder: its manifest, and each detection's overlays and raw maps.

    ``layer_per_level``: ``layers[i]`` feeds head level i (YOLO's Detect inputs), so each
    detection's own level has a gradient.
    """
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["upstream"] == upstream.name
    assert manifest["layers"] == layers
    assert manifest["target"] == target
    for key, value in upstream.manifest.items():
        assert manifest[key] == value, (key, manifest[key])
    ok = [image for image in manifest["images"] if not image.get("error")]
    assert ok and len(ok) == len(manifest["images"]), manifest
    total = 0
    for image in ok:
        width, height = image["width"], image["height"]
        stem = Path(image["file"]).stem
        assert (out / f"{stem}_summary.jpg").is_file()
        npz = np.load(out / "maps" / f"{stem}.npz")
        if upstream.detections_per_image is not None:
            assert len(image["detections"]) == upstream.detections_per_image, image["file"]
        for det in image["detections"]:
            total += 1
            x1, y1, x2, y2 = det["box_xyxy"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height, det
            if upstream.class_name is not None:
                assert det["class_name"] == upstream.class_name(det["class_id"])
            else:  # the upstream's own names, not the id as text
                assert det["class_name"] and det["class_name"] != str(det["class_id"]), det
            assert set(det["maps"]) == set(layers)
            drawn = 0
            for layer, record in det["maps"].items():
                if record["no_gradient"]:
                    assert record["overlay"] is None
                    continue
                drawn += 1
                assert (out / record["overlay"]).is_file()
                assert 0.0 <= record["energy_in_box"] <= 1.0
                raw = npz[f"det{det['id']}_{layer}"]
                assert raw.dtype == np.float16 and raw.shape == (height, width)
                assert np.isfinite(raw).all() and raw.min() >= 0 and raw.max() <= 1
            assert drawn >= 1, "every detection has a map at the level it was pooled or predicted from"
            if layer_per_level:
                assert 0 <= det["level"] < len(layers)
                assert not det["maps"][layers[det["level"]]]["no_gradient"], det
    assert total > 0
    return manifest


def assert_unsafe_checkpoint_is_refused(upstream: Upstream, checkout: Path, tmp_path: Path) -> None:
    """A checkpoint whose pickle would run a command is refused, naming the callable and the
    opt-in flag, and the command never runs."""
    marker = tmp_path / "pwned"
    name, fmt = upstream.unsafe_checkpoint
    evil = tmp_path / name
    written = run_child_in_checkout(checkout, "save_unsafe_checkpoint", fmt, str(evil), str(marker))
    assert written.returncode == 0, written.stderr[-3000:]
    assert json.loads(written.stdout.strip().splitlines()[-1]) == {"format": fmt, "path": str(evil)}
    assert evil.is_file() and not marker.exists()
    result = make_cam(upstream, checkout, weights=evil, out=tmp_path / "evil")
    assert result.returncode != 0
    assert "system" in result.stderr and "--trust-checkpoint" in result.stderr
    assert not marker.exists()


@contextmanager
def unpatched_worktree(checkout: Path, pin: str, where: Path) -> Iterator[Path]:
    """The pin without the series, as a git worktree of `checkout` at `where` while in use."""
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(where), pin], cwd=checkout, check=True, capture_output=True
    )
    try:
        yield where
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=checkout, check=False)


def assert_detects_like_unpatched(
    upstream: Upstream,
    checkout: Path,
    tmp_path: Path,
    *,
    child: str,
    args: Sequence[str],
    unpatched_args: Sequence[str] | None = None,
    runs: int,
) -> None:
    """The patched tree detects exactly what the unpatched pin does with the same weights.

    ``child`` (a module of tests/integration/children/) runs the upstream's own pipeline in either
    tree and prints, as its last line, a JSON list of `runs` runs (one per image or config), each
    ``{"boxes", "scores", "classes"}``.
    ``unpatched_args`` (default ``args``) are its arguments in the unpatched tree.
    """

    def run(tree: Path, tree_args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return run_child_in_checkout(tree, child, *tree_args)

    with unpatched_worktree(checkout, upstream.pin, tmp_path / "unpatched") as unpatched:
        before = run(unpatched, args if unpatched_args is None else unpatched_args)
        after = run(checkout, args)
    assert before.returncode == 0, before.stderr[-3000:]
    assert after.returncode == 0, after.stderr[-3000:]
    a = json.loads(before.stdout.strip().splitlines()[-1])
    b = json.loads(after.stdout.strip().splitlines()[-1])
    assert len(a) == len(b) == runs, (len(a), len(b))
    assert all(len(run["scores"]) > 0 for run in a)
    # Same detections in the same order; values equal up to float noise (two processes on a
    # multi-threaded CPU do not always sum in the same order: seen once, 6e-5 px apart).
    for k, (run_a, run_b) in enumerate(zip(a, b)):
        assert run_a["classes"] == run_b["classes"], k
        np.testing.assert_allclose(run_a["scores"], run_b["scores"], rtol=0, atol=1e-5, err_msg=str(k))
        np.testing.assert_allclose(run_a["boxes"], run_b["boxes"], rtol=0, atol=1e-3, err_msg=str(k))
