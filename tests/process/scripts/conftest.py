"""Fixtures shared by the tests of scripts/ and of the Makefile that calls them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """A PYTHON that prints its arguments as JSON instead of running anything."""
    fake = tmp_path / "fakepython"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    return fake
