"""``python ultralytics_demo_offline.py ARGS...``: ``python -m scripts ARGS`` with every network
attempt refused (an audit hook raises on socket connects, DNS lookups and urllib requests), so that a
command that reaches for the network fails instead of quietly downloading."""

from __future__ import annotations

import sys
from typing import Any

NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "urllib.Request")


def refuse(event: str, args: tuple[Any, ...]) -> None:
    if event in NETWORK_EVENTS:
        raise OSError(f"network refused in the test: {event} {args[:2]}")


def main(argv: list[str]) -> int:
    sys.addaudithook(refuse)
    from scripts.__main__ import main as scripts_main

    return int(scripts_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
