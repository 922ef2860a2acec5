"""`make eval`'s rows (what eval.json holds) and its fixed-width table (what it prints)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kit.core.results import FUSED
from kit.evaluation.evaluate import MEASURE_HEAD, Evaluator, format_columns, mean_finite, measure_cells
from scripts.eval.measures import BOTTOM_UP, Key


def fused_summary(evaluator: Evaluator) -> dict[str, Any]:
    """An evaluator's summary of the ``fused`` map (a layer set's map), without its layer name."""
    (row,) = [r for r in evaluator.summary_rows() if r["layer"] == FUSED] or [_empty_row()]
    return {k: v for k, v in row.items() if k != "layer"}


def best_method(evaluators: dict[Key, Evaluator], layer_set: str) -> str:
    """The method with the highest insertion minus deletion AUC at ``layer_set`` (Grad-CAM on a tie)."""
    scored = []
    for (method, name), evaluator in evaluators.items():
        row = fused_summary(evaluator)
        if name == layer_set and row["deletion_auc"] is not None and row["insertion_auc"] is not None:
            scored.append((row["insertion_auc"] - row["deletion_auc"], method == "gradcam", method))
    return max(scored)[2] if scored else "gradcam"


def table_rows(
    evaluators: dict[Key, Evaluator],
    correlations: dict[Key, dict[str, list[float]]],
    agreement: dict[Key, dict[str, list[float]]] | None = None,
) -> list[dict[str, Any]]:
    """One row per method x layer set: the evaluator's fused-map summary, the mean rho per sanity
    check (bottom-up and each top-down stage) and the mean agreement with D-RISE's maps (pixel rho,
    pooled rho, top-15 % IoU) with the count of detections each mean is over."""
    rows = []
    for (method, name), evaluator in evaluators.items():
        rand = correlations.get((method, name), {})
        with_drise = (agreement or {}).get((method, name), {})
        rows.append(
            {
                "method": method,
                "layers": name,
                **fused_summary(evaluator),
                "randomization": {s: mean_finite(v) for s, v in rand.items()},
                "randomization_nan": {s: int(sum(not math.isfinite(x) for x in v)) for s, v in rand.items()},
                "rho_drise": mean_finite(with_drise.get("rho", [])),
                "rho_drise_pooled": mean_finite(with_drise.get("rho_pooled", [])),
                "iou_drise_top15": mean_finite(with_drise.get("iou_top15", [])),
                "iou_drise_top15_raw": mean_finite(with_drise.get("iou_top15_raw", [])),
                "n_drise": sum(1 for x in with_drise.get("rho_pooled", []) if math.isfinite(x)),
            }
        )
    return rows


def drise_row(evaluator: Evaluator, *, images: int, masks: int, floor: float = 0.0) -> dict[str, Any]:
    """D-RISE's row: its fused-map summary on the first ``images`` images with ``masks`` masks each
    (the map the agreement compares with: ``floor`` 0 the paper's, else the significant pixels)."""
    return {
        "method": "drise",
        "layers": "image",
        "images": images,
        "masks": masks,
        "floor": floor,
        **fused_summary(evaluator),
    }


def box_rows(evaluators: dict[tuple[str, str, str], Evaluator]) -> list[dict[str, Any]]:
    """One row per target x method x layer set of the box comparison."""
    return [
        {"target": target, "method": method, "layers": name, **fused_summary(evaluator)}
        for (target, method, name), evaluator in evaluators.items()
    ]


def format_table(
    rows: Sequence[dict[str, Any]], stages: Sequence[str], *, verdicts: dict[Key, str] | None = None
) -> str:
    """A fixed-width table: one row per method x layer set; ``stages``: the randomization checks
    shown (e.g. "head", "0%", "bottom-up"); ``verdicts``: the rule's pass/fail per row."""
    head = [*(f"rho {_short(s)}" for s in stages), "rho D-RISE pooled", "IoU15 D-RISE", "IoU15 raw"]
    table = [["method", "layers", *MEASURE_HEAD, *head, *(["sound"] if verdicts is not None else [])]]
    for r in rows:
        rho = [r["randomization"].get(s) for s in stages] + [
            r.get("rho_drise_pooled"),
            r.get("iou_drise_top15"),
            r.get("iou_drise_top15_raw"),
        ]
        verdict = [] if verdicts is None else [verdicts.get((r["method"], r["layers"]), "-")]
        table.append([r["method"], r["layers"], *measure_cells(r), *(_cell(v, 2) for v in rho), *verdict])
    return format_columns(table)


def _short(stage: str) -> str:
    """A check's column name: "bu" for bottom-up, "td@<stage>" for a top-down stage."""
    return "bu" if stage == BOTTOM_UP else f"td@{stage}"


def format_box_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table: one row per target x method x layer set, with ODAM's box deletion."""
    table = [["target", "method", "layers", *MEASURE_HEAD, "box del"]]
    for r in rows:
        box = _cell(r.get("box_deletion_auc"), 3)
        table.append([r["target"], r["method"], r["layers"], *measure_cells(r), box])
    return format_columns(table)


def format_report(
    rows: Sequence[dict[str, Any]],
    *,
    stages: Sequence[str],
    drise: dict[str, Any] | None,
    boxes: Sequence[dict[str, Any]],
    verdicts: dict[Key, str] | None = None,
) -> str:
    """What `make eval` prints and keeps in table.txt: the table, D-RISE's line and the box table."""
    table = format_table(rows, stages, verdicts=verdicts)
    if drise is not None:
        floor = f", floor z >= {drise['floor']:g}" if drise.get("floor") else ""
        table += f"\nD-RISE ({drise['masks']} masks{floor}, first {drise['images']} images): " + "  ".join(
            f"{h} {c}" for h, c in zip(MEASURE_HEAD, measure_cells(drise))
        )
    if boxes:
        table += "\n\n" + format_box_table(boxes)
    return table


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _empty_row() -> dict[str, Any]:
    return {"n": 0, "pg": None, "ebpg": None, "n_curves": 0, "deletion_auc": None, "insertion_auc": None}
