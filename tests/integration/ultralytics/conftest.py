"""The ultralytics package for these tests: the pinned sdist set up once per session (with its
patch series) into a temporary folder by the setup engine, as every upstream's integration tests
are; skipped, saying how to point at the archive, where it is neither cached nor named locally."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import setup_checkout
from tests.ultralytics_models import provide


@pytest.fixture(scope="session", autouse=True)
def ultralytics_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout whose ``ultralytics/`` every test here imports (and its children, by PYTHONPATH)."""
    checkout = setup_checkout("ultralytics", tmp_path_factory.mktemp("upstreams"))
    provide(checkout)
    return checkout
