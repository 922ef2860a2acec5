"""The repository root's ``__init__.py`` where no kit is installed: ``import kit`` of a clone says
what the folder is and what to do, instead of an empty namespace package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_without_an_installed_kit_the_clone_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("kit", REPO_ROOT / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "meta_path", [])  # no finder knows another kit
    with pytest.raises(ImportError) as info:
        spec.loader.exec_module(module)
    text = str(info.value)
    assert f"'import kit' found {REPO_ROOT}, a clone of the kit's repository" in text
    assert f"cd {REPO_ROOT}" in text and f"pip install -e {REPO_ROOT}" in text
    assert sys.modules["kit"].__file__ == str(REPO_ROOT / "kit" / "__init__.py")  # the real kit untouched
