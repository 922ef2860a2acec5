"""Command line of the setup engine: `python -m scripts <command>` (the Makefile's targets call it).

`cam` and `bench` are handed to `scripts/cam.py` and `scripts/bench.py` (`main(argv) -> int`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.checkpatches import check_patches, format_results
from scripts.config import load_project
from scripts.engine import setup_upstream
from scripts.envinstall import install_requirements
from scripts.errors import KitSetupError
from scripts.refresh import refresh_patches
from scripts.status import status

DELEGATED = ("cam", "bench")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(  # SUPPRESS: the subcommand's copy must not reset a value given before it
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="upstreams.yaml to use (default: this repo's); "
        "its folder is the project root with patches/ and constraints.txt",
    )
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument(
        "--root",
        type=Path,
        help="checkouts go to ROOT/upstreams/<name> "
        "(default: $KIT_UPSTREAMS_DIR/<name>, else <project>/upstreams/<name>)",
    )

    parser = argparse.ArgumentParser(prog="python -m scripts", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    p = sub.add_parser("setup", parents=[common, root], help="check out the pin, apply the patches, install")
    p.add_argument("name")
    p.add_argument("--no-install", action="store_true", help="skip pip (the kit and the requirements)")
    sub.add_parser("status", parents=[common, root], help="where each checkout stands; versions in use")
    p = sub.add_parser("check-patches", parents=[common], help="every series applies strictly to its pin")
    p.add_argument("names", nargs="*", help="upstreams to check (default: all)")
    p.add_argument("--strict", action="store_true", help="an unreachable upstream is an error, not a skip")
    p = sub.add_parser(
        "refresh-patches", parents=[common, root], help="export the checkout's commits as patches"
    )
    p.add_argument("name")
    p = sub.add_parser("install-requirements", parents=[common], help="pip-install pinned requirements")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("name", nargs="?")
    group.add_argument("--all", action="store_true", help="the union of every upstream's requirements")
    for name in DELEGATED:
        sub.add_parser(name, help=f"see python -m scripts {name} --help")
    return parser


def run(args: argparse.Namespace) -> int:
    project = load_project(getattr(args, "config", None))
    if args.command == "setup":
        setup_upstream(args.name, project=project, root=args.root, install=not args.no_install)
    elif args.command == "status":
        print(status(project, args.root))
    elif args.command == "check-patches":
        results = check_patches(project, args.names, strict=args.strict)
        print(format_results(results))
        return 1 if any(r.problems for r in results) else 0
    elif args.command == "refresh-patches":
        refresh_patches(args.name, project=project, root=args.root)
    elif args.command == "install-requirements":
        install_requirements(sys.executable, project, list(project.upstreams) if args.all else [args.name])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        try:
            module = importlib.import_module(f"scripts.{argv[0]}")
        except ModuleNotFoundError as e:
            if e.name != f"scripts.{argv[0]}":
                raise
            print(f"error: scripts/{argv[0]}.py does not exist yet", file=sys.stderr)
            return 1
        return int(module.main(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KitSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was left half-made", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
