"""``python -m tests.process.children.audit RUN``: kit.evaluation.audit's numbers of a run folder,
as one JSON line (measured, empty, and whether a note says a map could not be read)."""

from __future__ import annotations

import json
import sys

from kit.evaluation.audit import audit_run


def main(argv: list[str]) -> int:
    audit = audit_run(argv[0])
    noted = any("could not be read" in note for note in audit.notes)
    total = audit.overall.total
    print(json.dumps({"measured": total.measured, "empty": total.empty, "noted": noted}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
