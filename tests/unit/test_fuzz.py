"""The fuzzer in make test: a fixed seed and a fixed number of cases of each kind (about half a
minute on 2 cores); ``make fuzz ARGS='--seconds 600'`` runs the same code for longer.

Every case must load or be refused, in a worker whose address space is limited and whose peak
RSS stays within the budget; and the driver itself must catch each way a case can fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kit.evaluation.labels import LabelError, load_labels
from tests import fuzz


def test_cases_are_the_same_for_a_seed(tmp_path: Path) -> None:
    import random

    seeds = fuzz.seed_checkpoints()
    for make in (lambda rng: fuzz.checkpoint_case(rng, seeds), fuzz.labels_case):
        first, again = random.Random(7), random.Random(7)
        cases = [make(first) for _ in range(5)]
        assert cases == [make(again) for _ in range(5)] and len({repr(c) for c in cases}) > 1


COCO_FOUND = {  # what the fuzzer found the COCO reader raising (exit 3), as the smallest files
    "nested": "[" * 5000 + "]" * 5000,
    "long-integer": '{"images": [], "categories": [], "x": ' + "9" * 5000 + "}",
    "annotations-number": json.dumps({**fuzz.COCO, "annotations": 1.5}),
    "bbox-integer-beyond-float": json.dumps(fuzz.COCO).replace("[1, 2, 10, 20]", f"[1, 2, {10**400}, 20]"),
}


@pytest.mark.parametrize("name", sorted(COCO_FOUND))
def test_what_the_fuzzer_found_in_coco_files_is_refused(name: str, tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(COCO_FOUND[name])
    with pytest.raises(LabelError, match=re.escape(str(path))):
        load_labels(path, names=["cat", "dog"], sources=[tmp_path / "a.jpg"])
