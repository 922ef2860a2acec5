"""``python -m kit audit RUN`` and ``python -m kit report RUN`` (:mod:`kit.cli.commands`)."""

from __future__ import annotations

import sys

from kit.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
