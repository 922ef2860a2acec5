"""The fuzzer in make test: a fixed seed and a fixed number of cases of each kind (about half a
minute on 2 cores); ``make fuzz ARGS='--seconds 600'`` runs the same code for longer.

Every case must load or be refused, in a worker whose address space is limited and whose peak
RSS stays within the budget; and the driver itself must catch each way a case can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import fuzz

CASES = {"checkpoint": 2000, "labels": 4000}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_every_case_loads_or_is_refused_within_the_memory_budget(kind: str, tmp_path: Path) -> None:
    report = fuzz.fuzz(kind=kind, seed=0, cases=CASES[kind], out=tmp_path / "failing")
    assert report.failures == [], report.failures[:10]
    assert sum(report.counts.values()) == CASES[kind]
    assert report.counts.get("loaded", 0) > 0 and report.counts.get("refused", 0) > 0, report.counts
    assert report.growth < fuzz.RSS_GROWTH, (report.growth >> 20, report.steepest)
