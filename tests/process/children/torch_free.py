"""The run folder's readers without torch: ``python -m tests.process.children.torch_free MODULE ARGS...``
runs ``MODULE.main(ARGS)`` (kit.evaluation.audit, kit.report.page) and prints one JSON line: its exit
code and whether torch was imported."""

from __future__ import annotations

import importlib
import json
import sys


def main(argv: list[str]) -> int:
    module = importlib.import_module(argv[0])
    code = module.main(argv[1:])
    print(json.dumps({"exit": code, "torch": "torch" in sys.modules}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
