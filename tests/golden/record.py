"""Write the references of tests/integration/test_unchanged.py: ``python -m tests.golden.record``.

Sets each upstream up in a temporary folder (``python -m scripts setup NAME --no-install``, the URL
after overrides, as the integration tests do), runs every case of :mod:`tests.golden.cases` twice,
each time in a fresh folder, and writes ``tests/golden/references/`` only when both runs of every
case gave the same record: a case that is not deterministic is reported with its difference and
nothing is written (exit 1). Run it on the code whose behaviour is the reference, from the
repository's root.
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.golden.cases import CASES, REPO_ROOT, CaseError, Workspace, reference_path, run_case

DIFF_LINES = 200


def setup_checkout(name: str, parent: Path) -> Path:
    """``parent/name``, the patched checkout of ``name`` (set up unless it already is)."""
    env = {**os.environ, "KIT_UPSTREAMS_DIR": str(parent)}
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "setup", name, "--no-install"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise CaseError(f"setting {name} up failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return parent / name


def diff(expected: str, actual: str, *, names: tuple[str, str]) -> str:
    """A unified diff of two stored forms, at most DIFF_LINES lines."""
    lines = list(difflib.unified_diff(expected.splitlines(), actual.splitlines(), *names, lineterm=""))
    more = len(lines) - DIFF_LINES
    return "\n".join(lines[:DIFF_LINES] + ([f"... {more} more lines"] if more > 0 else []))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.golden.record",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "cases", nargs="*", metavar="CASE", help=f"cases to record (default: all): {', '.join(CASES)}"
    )
    parser.add_argument(
        "--once", action="store_true", help="run each case once, without the determinism check"
    )
    parser.add_argument(
        "--upstreams", type=Path, help="folder of set-up checkouts to use (default: a temporary one)"
    )
    parser.add_argument(
        "--work", type=Path, help="folder for inputs and runs, kept afterwards (default: a temporary one)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        print(f"error: no case {', '.join(unknown)}; choose among: {', '.join(CASES)}", file=sys.stderr)
        return 2
    cases = args.cases or list(CASES)
    with tempfile.TemporaryDirectory(prefix="kit-golden-") as scratch:
        upstreams = args.upstreams or Path(scratch) / "upstreams"
        upstreams.mkdir(parents=True, exist_ok=True)
        checkouts: dict[str, Path] = {}

        def checkout(name: str) -> Path:
            if name not in checkouts:
                checkouts[name] = setup_checkout(name, upstreams.resolve())
            return checkouts[name]

        work = (args.work or Path(scratch) / "work").resolve()
        runs = 1 if args.once else 2
        workspaces = [Workspace(root=work / f"run{k + 1}", checkout=checkout) for k in range(runs)]
        for ws in workspaces:
            ws.root.mkdir(parents=True, exist_ok=True)
        results: dict[str, str] = {}
        unstable: list[str] = []
        for case in cases:
            texts = []
            for k, ws in enumerate(workspaces):
                started = time.perf_counter()
                try:
                    texts.append(run_case(case, ws))
                except CaseError as error:
                    print(f"error: case {case}: {error}", file=sys.stderr)
                    return 2
                print(f"{case}: run {k + 1} done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
            if any(text != texts[0] for text in texts[1:]):
                unstable.append(case)
                print(f"{case}: NOT deterministic\n{diff(texts[0], texts[1], names=('run1', 'run2'))}")
            else:
                results[case] = texts[0]
                print(f"{case}: {'deterministic' if runs > 1 else 'recorded once'}")
        if unstable:
            print(f"error: not written: {', '.join(unstable)} differ between two runs", file=sys.stderr)
            return 1
        for case, text in results.items():
            path = reference_path(case)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
