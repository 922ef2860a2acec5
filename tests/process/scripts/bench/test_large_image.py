"""`make bench ARGS=--large-image`: its child runner measures and bounds a child's memory, and its
images are what it says. No figure is asserted here: the memory is measured by the bench."""

from __future__ import annotations

from pathlib import Path

from scripts.bench import large_image as bench
from tests.children import REPO_ROOT, grow


def test_a_childs_peak_memory_is_read_and_a_child_above_the_bound_is_killed(tmp_path: Path) -> None:
    killed = bench.run_child(grow(400, hold_seconds=60), cwd=REPO_ROOT, max_rss_gb=0.2)  # 400 MB, then waits
    assert killed["exit"] == -9 and killed["killed_over_gb"] == 0.2
    assert killed["peak_mb"] >= 200  # it was measured above the bound when killed, not waited for
    small = bench.run_child(grow(100), cwd=REPO_ROOT, max_rss_gb=4)
    assert small["exit"] == 0 and small["killed_over_gb"] is None and small["peak_mb"] >= 100
