"""Safe checkpoint loading: what torch.save writes loads; a file that would run code does not.

A fixture package stands in for an upstream's model code: ``kitfx_models.yolo.Model`` evaluates
strings of its cfg when *called*, as yolov7's ``parse_model`` does, and ``kitfx_models.aws``
starts a command when *imported*, as yolov7's ``utils/aws/resume.py`` does. Every hostile file
below is refused and leaves its marker file unwritten.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests import hostile

REPO = Path(__file__).resolve().parents[4]


CHILD_LIMIT = 5 << 30  # address space: torch and the CLI map about 3.6 GB before any file is read


CHILD_GROWTH = 256 << 20  # peak RSS a child may add over its imports while refusing the corpus


REFUSALS = {
    "hash-key.pkl": "tuples nested more than 100 deep",
    "hash-key.zip": "tuples nested more than 100 deep",
    "set-member.pkl": "tuples nested more than 100 deep",
    "frozenset.pkl": "tuples nested more than 100 deep",
    "deep-list.pkl": "nested more than 100 deep",
    "deep-list.zip": "nested more than 100 deep",
    "hash-key-info.legacy": "tuples nested more than 100 deep",
    "deflate-pkl.zip": "are compressed",
    "memo-chain.pkl": "nested more than 100 deep",
    "deflate-bomb.zip": "are compressed",
    "short-record.zip": "declared as 268,435,456 bytes but the archive holds 16 bytes",
    "overlap-view.zip": r"size \(100000, 100000\), stride \(1, 1\) .* has more elements than its storage",
    "view-beyond.zip": "reaches past its storage of 4 elements",
    "view-beyond.legacy": "reaches past its storage of 4 elements",
    "many-views.zip": "more than 4x its",
    "legacy-unfilled.legacy": "uninitialized memory",
    "legacy-short.legacy": "uninitialized memory",
    "numpy-repeat.pkl": "a numpy array of shape .* more than 4x its",
    "bytearray-repeat.pkl": "builtins.bytearray .* more than 4x its",
    "empty-sets.pkl": r"it makes [\d,]+ bytes of tensors, arrays and Python objects .* more than 4x its",
    "bytearray8.pkl": "BYTEARRAY8 of 2147483648 bytes where the file has 1",
}


def test_the_hostile_corpus_is_refused_with_exit_2_in_bounded_memory(tmp_path: Path) -> None:
    """The issue's files (nesting that overflowed the C stack, exit 139; a few bytes that made
    gigabytes) through the entry points' path (kit.cli.main.guarded), in a child with its address
    space limited: each exits 2 with its reason, and the child's peak RSS stays near its imports."""
    files = hostile.corpus()
    assert set(files) == set(REFUSALS)
    paths = [str(hostile.write(tmp_path / name, data)) for name, data in sorted(files.items())]
    code, peak, out = hostile.run_child(["load", *paths], limit_bytes=CHILD_LIMIT, cwd=REPO)
    assert code == 0, out[-3000:]
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    start = lines[0]["rss"]
    outcomes = {line["name"]: line for line in lines[1:]}
    assert set(outcomes) == set(REFUSALS), out[-3000:]
    for name, expected in REFUSALS.items():
        outcome = outcomes[name]
        assert outcome["code"] == 2, (name, outcome)
        assert re.search(expected, outcome["message"]), (name, outcome["message"])
        named = rf"error: (refusing to load|cannot read checkpoint) '{re.escape(str(tmp_path / name))}'"
        assert re.match(named, outcome["message"]), outcome
    assert peak - start < CHILD_GROWTH, (peak - start) >> 20
