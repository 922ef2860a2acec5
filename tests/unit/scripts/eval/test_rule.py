"""The rule of docs/evaluation.md on hand-made rows: who passes, the mean rank, ties, the goals."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.eval import rule


def row(
    method: str, *, bu: float | None, dele: float, ins: float, iou: float | None, **more: Any
) -> dict[str, Any]:
    randomization = {} if bu is None else {"bottom-up": bu, "0%": 0.9}
    found = {"method": method, "layers": "h", "randomization": randomization, "deletion_auc": dele}
    return found | {"insertion_auc": ins, "iou_drise_top15": iou, "pg": 0.5, "ebpg": 0.7} | more


def test_only_candidates_that_pass_the_bottom_up_check_are_ranked() -> None:
    rows = [
        row("gradcam", bu=0.1, dele=0.2, ins=0.8, iou=0.3),
        row("layercam", bu=1.0, dele=0.05, ins=0.99, iou=0.9),  # best on all, fails the check
        row("xgradcam", bu=0.5, dele=0.1, ins=0.7, iou=0.35),  # at the bound: passes
        row("eigencam", bu=0.0, dele=0.0, ins=1.0, iou=1.0),  # no candidate
        row("hirescam", bu=None, dele=0.0, ins=1.0, iou=1.0),  # not measured: fails
    ]
    choice = rule.choose(rows)
    assert choice.verdicts == {
        ("gradcam", "h"): "pass",
        ("layercam", "h"): "fail",
        ("xgradcam", "h"): "pass",
        ("hirescam", "h"): "fail",
    }
    # deletion: xgradcam 1, gradcam 2; insertion: gradcam 1, xgradcam 2; IoU: xgradcam 1, gradcam 2
    assert choice.ranks == {("gradcam", "h"): pytest.approx(5 / 3), ("xgradcam", "h"): pytest.approx(4 / 3)}
    assert choice.chosen == ("xgradcam", "h")
    assert choice.goals == {
        "EBPG >= 0.6": True,
        "PG >= 0.95": False,
        "del <= 0.12": True,
        "IoU15 D-RISE >= 0.4": False,
        "sound check": True,
    }


def test_a_tie_goes_to_the_cheaper_and_a_costly_method_is_not_eligible() -> None:
    rows = [
        row("gradcam", bu=0.1, dele=0.2, ins=0.8, iou=None),
        row("odam", bu=0.1, dele=0.2, ins=0.8, iou=None),
    ]
    assert rule.choose(rows).chosen == ("gradcam", "h")  # the table's order when no cost is given
    assert rule.choose(rows, cost_order=["odam", "gradcam"]).chosen == ("odam", "h")
    found = rule.choose(rows, too_costly=["gradcam"])
    assert found.verdicts[("gradcam", "h")] == "costly" and found.chosen == ("odam", "h")
    assert found.goals["IoU15 D-RISE >= 0.4"] is None


def test_no_choice_when_nothing_passes() -> None:
    choice = rule.choose([row("layercam", bu=0.9, dele=0.1, ins=0.9, iou=0.5)])
    assert choice.chosen is None and choice.goals == {}
    assert "no candidate passes" in rule.format_choice(choice)
    assert choice.record()["chosen"] is None
