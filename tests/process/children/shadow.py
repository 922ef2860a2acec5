"""``python -m tests.process.children.shadow``: ``import kit`` from the working folder, as the README's
snippet does; one JSON line: the file imported and whether it has ``load``."""

from __future__ import annotations

import json
import sys


def main() -> int:
    import kit

    print(json.dumps({"file": getattr(kit, "__file__", None), "load": callable(getattr(kit, "load", None))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
