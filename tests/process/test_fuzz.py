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


def test_the_driver_catches_each_way_a_case_fails(tmp_path: Path) -> None:
    """A signal, a hang, running out of memory and an exception other than the refusal are
    failures naming their case; the cases after a crash still run."""
    cases = ["fine", "refused", "bug", "memory", "signal", "fine", "hang", "fine"]
    paths = []
    for number, what in enumerate(cases):
        path = tmp_path / f"{number}.case"
        path.write_text(what)
        paths.append(path)
    report = fuzz.Report()
    remaining = paths
    while remaining:
        remaining = fuzz._run_worker("selftest", remaining, tmp_path, report, case_seconds=3)
    failures = {Path(case).name: what for case, what in report.failures}
    assert set(failures) == {"2.case", "3.case", "4.case", "6.case"}, failures
    assert failures["2.case"] == "KeyError: 'a bug'"
    assert failures["3.case"].startswith("MemoryError")
    assert failures["4.case"] == "worker ended with -11"
    assert failures["6.case"] == "ran past its time"
    assert report.counts == {"loaded": 3, "refused": 1, "error": 2, "crash": 2}
