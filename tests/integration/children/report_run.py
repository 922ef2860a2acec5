"""``python report_run.py SHAPES OUT PROJECT`` in the yolov7 checkout: the demo detector through
kit.load on two synthetic images, with --eval and the audit; prints the report's path."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    shapes, out, project = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    sys.path.append(project)  # the project, for the demo's synthetic shapes
    import kit
    from kit.evaluation.audit import audit_run, write_audit
    from kit.report.page import write_report
    from scripts.demo.shapes import write_split

    images = write_split(Path(shapes), count=2)
    explainer = kit.load("yolov7", "demo", max_det=3)
    result = explainer.run(
        str(images), out, fuse=True, labels=str(images.parent / "labels"), eval_curves=1, eval_steps=2
    )
    write_audit(audit_run(result.out_dir, top=3))
    print(write_report(result.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
