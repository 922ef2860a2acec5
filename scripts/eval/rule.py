"""The rule that picks the default method, as docs/evaluation.md wrote it before the numbers.

Candidates: the per-detection gradient methods (and ``odam`` where it exists) at their layer sets;
EigenCAM is none (one map for every detection). A candidate passes the sound check when its mean
bottom-up randomization rho is at most :data:`SOUND_RHO`; one whose cost at 50 detections is above
2x plain inference (``make bench``, passed in as ``too_costly``) is not eligible. Among the rest,
the best mean rank over deletion AUC (lower), insertion AUC (higher) and the top-15 % IoU with
D-RISE (higher) wins; a tie goes to the cheaper (``cost_order``: the methods cheapest first). The
goals are then read for the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SOUND_RHO = 0.5
NOT_CANDIDATES = frozenset({"eigencam", "drise"})
# measure, row key, True where higher is better
RANKED = (
    ("deletion", "deletion_auc", False),
    ("insertion", "insertion_auc", True),
    ("iou_drise", "iou_drise_top15", True),
)
GOALS = (
    ("EBPG >= 0.6", "ebpg", lambda v: v >= 0.6),
    ("PG >= 0.95", "pg", lambda v: v >= 0.95),
    ("del <= 0.12", "deletion_auc", lambda v: v <= 0.12),
    ("IoU15 D-RISE >= 0.4", "iou_drise_top15", lambda v: v >= 0.4),
)


@dataclass
class Choice:
    """The rule applied to one family's rows: per candidate its verdict and mean rank, the choice
    (None when no candidate passes and is eligible) and the goals read for it."""

    verdicts: dict[tuple[str, str], str] = field(default_factory=dict)
    ranks: dict[tuple[str, str], float] = field(default_factory=dict)
    chosen: tuple[str, str] | None = None
    goals: dict[str, bool | None] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """As eval.json keeps it."""
        key = lambda k: f"{k[0]} @ {k[1]}"  # noqa: E731
        return {
            "rule": "docs/evaluation.md, How the default is chosen",
            "sound_rho": SOUND_RHO,
            "verdicts": {key(k): v for k, v in self.verdicts.items()},
            "mean_ranks": {key(k): round(v, 3) for k, v in self.ranks.items()},
            "chosen": None if self.chosen is None else {"method": self.chosen[0], "layers": self.chosen[1]},
            "goals": self.goals,
        }


def verdict(row: dict[str, Any], *, too_costly: Sequence[str]) -> str:
    """ "pass", "fail" (bottom-up rho above the bound, or not measured), or "costly"."""
    rho = row["randomization"].get("bottom-up")
    if rho is None or rho > SOUND_RHO:
        return "fail"
    return "costly" if row["method"] in too_costly else "pass"


def mean_ranks(rows: Sequence[dict[str, Any]]) -> list[float]:
    """Each row's mean rank (1 = best, ties share their mean rank) over the measures of :data:`RANKED`
    that every row has; a row set with none of them ranks all alike."""
    ranks = []
    for _, key, higher in RANKED:
        values = [r.get(key) for r in rows]
        if any(v is None for v in values):
            continue
        signed = np.array(values, dtype=np.float64) * (-1.0 if higher else 1.0)
        ranks.append(np.array([1 + (signed < x).sum() + ((signed == x).sum() - 1) / 2 for x in signed]))
    return [float(v) for v in np.mean(ranks, axis=0)] if ranks else [1.0] * len(rows)


def choose(
    rows: Sequence[dict[str, Any]], *, too_costly: Sequence[str] = (), cost_order: Sequence[str] = ()
) -> Choice:
    """The rule on one family's table rows."""
    choice = Choice()
    candidates = [r for r in rows if r["method"] not in NOT_CANDIDATES]
    for row in candidates:
        choice.verdicts[(row["method"], row["layers"])] = verdict(row, too_costly=too_costly)
    passing = [r for r in candidates if choice.verdicts[(r["method"], r["layers"])] == "pass"]
    order = list(cost_order) + [r["method"] for r in rows]  # cheapest first; else the table's order
    for row, rank in zip(passing, mean_ranks(passing)):
        choice.ranks[(row["method"], row["layers"])] = rank
    if passing:
        best = min(
            passing, key=lambda r: (choice.ranks[(r["method"], r["layers"])], order.index(r["method"]))
        )
        choice.chosen = (best["method"], best["layers"])
        choice.goals = goals(best)
    return choice


def goals(row: dict[str, Any]) -> dict[str, bool | None]:
    """Each goal of issue 25 met or not (None: not measured) for one row; the sound check passed by
    construction."""
    met: dict[str, bool | None] = {
        name: (None if row.get(key) is None else bool(test(row[key]))) for name, key, test in GOALS
    }
    met["sound check"] = True
    return met


def format_choice(choice: Choice) -> str:
    """The rule's lines under the table."""
    if choice.chosen is None:
        return "rule: no candidate passes the bottom-up check (rho <= 0.5) and is eligible: no choice"
    ranked = ", ".join(
        f"{m} {rank:.2f}" for (m, _), rank in sorted(choice.ranks.items(), key=lambda kv: kv[1])
    )
    met = ", ".join(
        f"{name} {'yes' if ok else '-' if ok is None else 'no'}" for name, ok in choice.goals.items()
    )
    return (
        f"rule: {choice.chosen[0]} at {choice.chosen[1]} (mean rank of the passing: {ranked})\ngoals: {met}"
    )
