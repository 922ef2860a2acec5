"""The ultralytics loader's admitted classes, attacked as the other YOLO upstreams' are
(tests/integration/test_hostile_checkpoints.py): every nn.Module class of the package's admitted
modules called through a REDUCE is refused, a pickle calling os.system is refused, and a genuine
trainer checkpoint still loads; all in one child process in the checkout, nothing run."""

from __future__ import annotations

import json
from pathlib import Path

from tests.hostile import g, raw, s, t
from tests.integration.conftest import run_child_in_checkout
from tests.ultralytics_models import random_detector, save_checkpoint


def test_every_admitted_class_called_through_a_reduce_is_refused_and_a_trainer_checkpoint_loads(
    ultralytics_checkout: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    genuine = save_checkpoint(random_detector("yolo11n.yaml"), tmp_path / "best.pt")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(raw(g("os", "system") + t(s(f"touch {marker}")) + b"R"))
    result = run_child_in_checkout(
        ultralytics_checkout,
        "hostile_refusals",
        "ultralytics",
        str(tmp_path / "scratch.pkl"),
        str(genuine),
        str(evil),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["files"] == {"best.pt": "loaded", "evil.pkl": "refused"}
    classes = report["classes"]
    assert classes["count"] > 100, classes  # the package's blocks, convs, heads and transformer modules
    assert classes["loaded"] == [] and classes["refused"] == 2 * classes["count"], classes
    assert not marker.exists()
