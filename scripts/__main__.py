"""Every command of the project: `python -m scripts <command> [flags]` (the Makefile's targets call it).

One table, COMMANDS: each command is a module with `main(argv) -> int`, imported only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str  # has main(argv: list[str]) -> int
    summary: str  # its line in `python -m scripts --help`

    @property
    def project_config(self) -> bool:
        """The setup engine's commands take --config (the project's upstreams.yaml), also before the name."""
        return self.module.startswith("scripts.upstream.")


COMMANDS: dict[str, Command] = {
    "setup": Command("scripts.upstream.setup_upstream", "check out the pin, apply the patches, install"),
    "status": Command("scripts.upstream.status", "where each checkout stands; versions in use"),
    "check-patches": Command("scripts.upstream.checkpatches", "every series applies strictly to its pin"),
    "refresh-patches": Command("scripts.upstream.refresh", "export the checkout's commits as patches"),
    "install-requirements": Command("scripts.upstream.envinstall", "pip-install pinned requirements"),
    "cam": Command("scripts.cam.launch", "run an upstream's main_gradcam.py with the project's defaults"),
    "bench": Command("scripts.bench.driver", "the kit's speed beside plain inference and the baselines"),
    "eval": Command("scripts.eval.faithfulness", "how faithful each CAM method is at each layer set"),
    "demo": Command("scripts.demo.train", "train the demo detector (yolov7-tiny on synthetic shapes)"),
}


def build_parser() -> argparse.ArgumentParser:
    """For what comes before the command: --help, --config, or a mistake (argparse says which)."""
    width = max(map(len, COMMANDS)) + 2
    listing = "\n".join(f"  {name:<{width}}{command.summary}" for name, command in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="python -m scripts",
        description="Every command of the project (the Makefile's targets call them).",
        epilog=f"commands:\n{listing}\n\n`python -m scripts <command> --help` shows a command's flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help="upstreams.yaml to use (default: this repo's), for "
        + ", ".join(name for name, command in COMMANDS.items() if command.project_config),
    )
    parser.add_argument("command", choices=COMMANDS, metavar="command", help="one of the commands below")
    rest = parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's flags")
    rest.required = False  # a missing command is the one error to name
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        name, rest = argv[0], argv[1:]
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
        name, rest = args.command, list(args.args)
        if args.config is not None:
            if not COMMANDS[name].project_config:
                takers = ", ".join(n for n, command in COMMANDS.items() if command.project_config)
                parser.error(
                    f"--config before the command is for {takers}; give {name}'s flags after its name"
                )
            rest = ["--config", args.config, *rest]
    module = importlib.import_module(COMMANDS[name].module)
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
