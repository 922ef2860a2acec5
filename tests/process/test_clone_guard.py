"""The repository root's ``__init__.py``: a clone named ``kit`` in the working folder no longer hides
the installed kit ("module 'kit' has no attribute 'load'"); the installed one is used, and the
warning names both folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.children import REPO_ROOT, run_module


def test_a_clone_named_kit_in_the_working_folder_loads_the_installed_kit(tmp_path: Path) -> None:
    clone = tmp_path / "kit"
    (clone / "kit").mkdir(parents=True)  # the clone's own package, never imported from here
    shutil.copyfile(REPO_ROOT / "__init__.py", clone / "__init__.py")
    (clone / "kit" / "__init__.py").write_text("raise SystemExit('the clone was imported')\n")
    outcome = run_module("shadow", cwd=tmp_path, timeout=120)
    assert outcome.exit == 0, outcome.stderr
    found = json.loads(outcome.stdout)
    assert found == {"file": str(REPO_ROOT / "kit" / "__init__.py"), "load": True}
    assert f"the folder {clone} (a clone of the kit's repository" in outcome.stderr
    assert f"using the installed one, {REPO_ROOT / 'kit' / '__init__.py'}" in outcome.stderr
