"""``python -m kit <command> ...``: the kit's commands that read a run folder, by a short name.

``python -m kit audit RUN`` is ``python -m kit.evaluation.audit RUN``, then ``index.html`` rewritten
with the audit (``make audit`` leaves no page without it), and ``python -m kit report RUN`` is
``python -m kit.report.page RUN`` (both modules still work alone). Each command's module is
imported only when it runs, so neither loads torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Optional

from kit.core.display import shown

# Each command: the module whose main(argv) -> int runs it, and its line in the help.
COMMANDS: dict[str, tuple[str, str]] = {
    "audit": ("kit.evaluation.audit", "per class, where a run's maps lie against their boxes (audit.json)"),
    "report": ("kit.report.page", "index.html: a run's images, detections and maps, for a browser"),
}
EXIT_REFUSED = 2  # as every entry point's (kit.cli.main)


def usage() -> str:
    """The help of ``python -m kit``: its commands, one a line."""
    rows = "\n".join(f"  {name:<8} {line}" for name, (_, line) in COMMANDS.items())
    return (
        "usage: python -m kit <command> RUN [options]\n\ncommands:\n"
        f"{rows}\n\n`python -m kit <command> --help` lists a command's options."
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command named by ``argv[0]`` with the rest of ``argv``; its exit code (2, with the
    commands listed, for a missing or unknown command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not args or args[0] not in COMMANDS:
        given = f"unknown command {args[0]!r}" if args else "no command given"
        print(f"error: {given}; choose one of: {', '.join(COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return EXIT_REFUSED
    module, _ = COMMANDS[args[0]]
    code: int = importlib.import_module(module).main(args[1:])
    if code == 0 and args[0] == "audit":
        code = _report_after_audit(args[1:])
    return code


def _report_after_audit(argv: Sequence[str]) -> int:
    """After ``audit`` wrote ``audit.json``: rewrite the run's ``index.html`` with it (as ``report``
    does: through a temporary file and a rename), so the page never shows a run without its audit.
    Nothing when ``--no-write`` kept ``audit.json`` as it was, or for ``--help``."""
    from kit.evaluation.audit import parser

    if any(a in ("-h", "--help") for a in argv):
        return 0
    opt = parser().parse_args(argv)  # main() just parsed the same arguments
    if opt.no_write:
        return 0
    from kit.evaluation.audit import command_failed
    from kit.report.page import REPORT_NAME, write_report

    try:
        path = write_report(opt.run)
    except (Exception, KeyboardInterrupt) as error:
        return command_failed(error, output=REPORT_NAME)
    print(f"report updated with the audit: {shown(str(path))}", file=sys.stderr)
    return 0
