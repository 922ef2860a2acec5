"""The kit's layers, read from its imports: the core knows neither the run loop nor evaluation,
evaluation does not know the run loop, and no kit module imports an upstream's code at module level.

Read with ``ast`` (nothing is imported): every ``import kit...`` / ``from kit... import`` of each
module, at any depth (a lazy import inside a function counts too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[1] / "kit"

CORE = ["engine", "methods", "targets", "fusion", "maps", "detections", "errors", "adapters"]
EVALUATION = ["evaluate", "metrics", "labels"]
RUN = ["runner", "outputs", "journal", "distributed", "progress", "cli", "api", "loaders", "checkpoints"]
RUN_AND_EVAL = [*RUN, *EVALUATION, "render"]
UPSTREAM_PACKAGES = {"models", "utils", "detectron2"}
# The audit reads run folders: it may know the folder's rules (outputs, lazily: they load torch) and
# the kit's errors, never the run loop, the facade or evaluation.
AUDIT_MAY_IMPORT = {"errors", "outputs", "maps", "results"}
AUDIT_AT_MODULE_LEVEL = {"errors"}  # `python -m kit.audit` starts without torch


def module_files(names: list[str]) -> list[Path]:
    files: list[Path] = []
    for name in names:
        package = KIT / name
        files += sorted(package.rglob("*.py")) if package.is_dir() else [KIT / f"{name}.py"]
    return files


def kit_imports(path: Path) -> set[str]:
    """The kit modules ``path`` imports, as 'kit.<first part>' names (kit.adapters.base -> adapters)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module == "kit" and node.level == 0:
            names = [f"kit.{alias.name}" for alias in node.names]  # from kit import cli
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found.update(n.split(".")[1] for n in names if n.startswith("kit.") and len(n.split(".")) > 1)
    return found


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


@pytest.mark.parametrize("path", module_files(CORE), ids=lambda p: str(p.relative_to(KIT)))
def test_the_core_imports_neither_the_run_loop_nor_evaluation(path: Path) -> None:
    assert not kit_imports(path) & set(RUN_AND_EVAL), kit_imports(path)


@pytest.mark.parametrize("path", module_files(EVALUATION), ids=lambda p: str(p.relative_to(KIT)))
def test_evaluation_does_not_import_the_run_loop(path: Path) -> None:
    assert not kit_imports(path) & set(RUN), kit_imports(path)


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(KIT.rglob("*.py")) if p.name != "cli.py"],
    ids=lambda p: str(p.relative_to(KIT)),
)
def test_only_the_entry_points_import_the_command_line_module(path: Path) -> None:
    """kit.cli is the entry points' (flags, exit codes); the API and the loaders check values with
    kit.options and load checkpoints with kit.checkpoints, so ``import kit`` never needs argparse."""
    assert "cli" not in kit_imports(path)


@pytest.mark.parametrize("path", sorted(KIT.rglob("*.py")), ids=lambda p: str(p.relative_to(KIT)))
def test_no_kit_module_imports_an_upstream_at_module_level(path: Path) -> None:
    """Upstream code is imported lazily, from its checkout, by kit.loaders only."""
    assert not top_level_imports(path) & UPSTREAM_PACKAGES


def test_the_reader_sees_lazy_and_aliased_imports(tmp_path: Path) -> None:
    """What the layer tests rely on: an import inside a function, and 'import kit.x as y'."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import kit.outputs as o\nfrom kit import cli\n\ndef f():\n    from kit.runner import run\n"
        "    import models.yolo\n"
    )
    assert kit_imports(probe) == {"outputs", "cli", "runner"}
    assert top_level_imports(probe) == {"kit"}  # the upstream import is lazy: allowed
    assert kit_imports(KIT / "runner.py") >= {"engine", "outputs", "results"}


def test_the_audit_reads_run_folders_without_the_run_loop() -> None:
    audit = KIT / "audit.py"
    assert kit_imports(audit) <= AUDIT_MAY_IMPORT, kit_imports(audit)
    assert top_level_kit_imports(audit) <= AUDIT_AT_MODULE_LEVEL, top_level_kit_imports(audit)


def top_level_kit_imports(path: Path) -> set[str]:
    """The kit modules ``path`` imports at module level (not inside a function)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kit."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("kit."))
    return found
