"""Readers of hostile files in a child, under an address-space limit, so a file that would exhaust
memory takes only the child: ``python -m tests.process.children.readers yaml PATH MAX_BYTES`` (the safe
YAML reader) or ``... labels-json PATH ADDRESS_SPACE`` (a COCO json of ``--eval``; the limit is set
before the reader is imported).

A refusal is one line on stderr and exit 2, as the entry points end; a file read prints
``read`` and exits 0.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def read_yaml(path: Path, max_bytes: int) -> int:
    from kit.core.errors import KitError
    from kit.upstreams.safeyaml import read_yaml as read

    try:
        read(path, max_bytes=max_bytes)
    except KitError as error:
        print(error, file=sys.stderr)
        return 2
    print("read")
    return 0


def read_labels_json(path: Path, address_space: int) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    from kit.evaluation.labels import LabelError, read_json

    try:
        read_json(path)
    except LabelError as error:
        print(error, file=sys.stderr)
        return 2
    print("read")
    return 0


def main(argv: list[str]) -> int:
    kind, path, number = argv
    if kind == "yaml":
        return read_yaml(Path(path), int(number))
    if kind == "labels-json":
        return read_labels_json(Path(path), int(number))
    raise SystemExit(f"unknown reader {kind!r}: yaml or labels-json")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
