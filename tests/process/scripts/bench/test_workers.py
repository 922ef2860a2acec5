"""`make bench`'s driver and its workers agree: every model has a worker that takes the driver's flags.

No timing here: speed is measured by `make bench`, never asserted in a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.bench import driver as bench
from tests.children import child_env


def test_a_failing_worker_keeps_its_records_and_the_others_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for cfg in ("bad.yaml", "good.yaml"):
        (tmp_path / cfg).write_text("")
    monkeypatch.setenv("PYTHONPATH", child_env()["PYTHONPATH"])
    monkeypatch.setattr(bench, "WORKERS", {"fake": "tests.process.children.bench"})
    monkeypatch.setattr(
        bench, "MODELS", [("fake", "bad.yaml", "1", "x.jpg"), ("fake", "good.yaml", "1", "x.jpg")]
    )
    monkeypatch.setattr(bench, "checkout_path", lambda project, upstream: tmp_path)
    out = tmp_path / "latest.json"
    assert bench.main(["--baselines", "", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "fake bad.yaml: worker failed" in captured.err and "failed: fake bad.yaml" in captured.err
    found = [(r["model"], r["method"]) for r in json.loads(out.read_text())["records"]]
    assert found == [("bad", "plain"), ("good", "plain"), ("good", "kit-gradcam")]
