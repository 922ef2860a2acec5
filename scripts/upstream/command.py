"""What the upstream commands (setup, status, check-patches, refresh-patches, install-requirements)
share: the `--config` and `--root` flags, and how an error ends a command (one line; exit 2 for a
refused upstreams.yaml, user file, name or source archive, exit 1 for the others).

Each command's module has `main(argv) -> int`, run by `python -m scripts <command>`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from scripts.upstream.errors import ArchiveError, ConfigError, KitSetupError


def parser(command: str, description: str, *, root: bool = False) -> argparse.ArgumentParser:
    """The parser of `python -m scripts <command>` with `--config` (and `--root` where a checkout is used)."""
    parser = argparse.ArgumentParser(prog=f"python -m scripts {command}", description=description)
    parser.add_argument(
        "--config",
        type=Path,
        help="upstreams.yaml to use (default: this repo's); "
        "its folder is the project root with patches/ and constraints.txt",
    )
    if root:
        parser.add_argument(
            "--root",
            type=Path,
            help="checkouts go to ROOT/upstreams/<name> "
            "(default: $KIT_UPSTREAMS_DIR/<name>, else <project>/upstreams/<name>)",
        )
    return parser


def run(body: Callable[[], int]) -> int:
    """`body()`'s exit code; a setup error is one line on stderr and exit 1 (2 for a ConfigError:
    refused input, as the entry points' exit 2), Ctrl-C exit 130."""
    try:
        return body()
    except (ConfigError, ArchiveError) as e:  # refused input (upstreams.yaml, the user file, a name,
        # an archive whose sha256 or members are refused): exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KitSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was left half-made", file=sys.stderr)
        return 130
