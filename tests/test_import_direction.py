"""The layers, read from the imports: in kit/, the core knows neither the run loop nor evaluation,
evaluation does not know the run loop, and no kit module imports an upstream's code at module level;
in scripts/, the subpackages (one per concern) share only the setup engine's config and errors.

Read with ``ast`` (nothing is imported): every ``import kit...`` / ``from kit... import`` (and the
same for ``scripts``) of each module, at any depth (a lazy import inside a function counts too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[1] / "kit"
SCRIPTS = KIT.parent / "scripts"

CORE = [
    *("engine", "methods", "targets", "fusion", "maps", "detections", "errors", "display", "adapters"),
    "drise",
]
EVALUATION = ["evaluate", "metrics", "labels", "missed"]
RUN = ["runner", "outputs", "journal", "distributed", "progress", "cli", "api", "loaders", "checkpoints"]
RUN_AND_EVAL = [*RUN, *EVALUATION, "render"]
UPSTREAM_PACKAGES = {"models", "utils", "detectron2"}
# The audit reads run folders: it may know the folder's rules (outputs, lazily: they load torch) and
# the kit's errors, never the run loop, the facade or evaluation.
AUDIT_MAY_IMPORT = {"errors", "display", "journal", "rundir", "outputs", "maps", "results"}
AUDIT_AT_MODULE_LEVEL = {
    "errors",
    "display",
    "journal",
    "rundir",
}  # `python -m kit.audit` starts without torch
# The run report reads a finished run folder through the audit's reader: never the run loop
# (kit.runner), the facade (kit.api) or the command line (kit.cli), which call it at a run's end.
REPORT_MAY_IMPORT = {"errors", "display", "audit"}

# What the setup engine (scripts/upstream/) shares with cam, bench, eval and demo.
SHARED = {"scripts.upstream.config", "scripts.upstream.errors"}
# Imports between the other subpackages that the code has today; none may be added. `make cam`'s
# offline fallback draws demo images; `make eval` measures on the demo set with the demo model.
CROSSINGS = {
    "bench/driver.py": {"scripts.demo.shapes"},  # the scale row explains synthetic shapes
    "bench/large_image.py": {"scripts.demo.shapes"},  # a photo of tiled shapes the demo detector finds
    "cam/launch.py": {"scripts.demo.shapes"},
    "eval/faithfulness.py": {"scripts.demo.shapes", "scripts.demo.train"},
}


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


def scripts_imports(path: Path) -> set[str]:
    """The scripts modules ``path`` imports (``from scripts.demo import shapes``: scripts.demo.shapes)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "scripts":
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    is_module = (KIT.parent / f"{name.replace('.', '/')}.py").is_file()
                    found.add(name if is_module else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "scripts")
    return found


def subpackage_files() -> list[Path]:
    return sorted(p for p in SCRIPTS.rglob("*.py") if p.parent != SCRIPTS)


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


@pytest.mark.parametrize("path", subpackage_files(), ids=lambda p: str(p.relative_to(SCRIPTS)))
def test_scripts_subpackages_share_only_the_setup_engines_config(path: Path) -> None:
    """Each concern of scripts/ stands alone: it may use scripts.upstream's config and errors, and
    otherwise only the crossings listed in CROSSINGS."""
    own = path.relative_to(SCRIPTS).parts[0]
    crossing = {m for m in scripts_imports(path) if m.split(".")[1] != own}
    assert not crossing - SHARED - CROSSINGS.get(str(path.relative_to(SCRIPTS)), set()), crossing


def test_every_listed_crossing_is_still_there() -> None:
    """A crossing that the code no longer has leaves CROSSINGS too, so the list only shrinks."""
    for rel, names in CROSSINGS.items():
        assert scripts_imports(SCRIPTS / rel) >= names, rel


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
    probe.write_text("def f():\n    from scripts.demo import shapes\n\nimport scripts.upstream.config as c\n")
    assert scripts_imports(probe) == {"scripts.demo.shapes", "scripts.upstream.config"}


def test_the_audit_reads_run_folders_without_the_run_loop() -> None:
    audit = KIT / "audit.py"
    assert kit_imports(audit) <= AUDIT_MAY_IMPORT, kit_imports(audit)
    assert top_level_kit_imports(audit) <= AUDIT_AT_MODULE_LEVEL, top_level_kit_imports(audit)


def test_the_report_reads_run_folders_without_the_run_loop() -> None:
    report = KIT / "report.py"
    assert kit_imports(report) <= REPORT_MAY_IMPORT, kit_imports(report)


def top_level_kit_imports(path: Path) -> set[str]:
    """The kit modules ``path`` imports at module level (not inside a function)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kit."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("kit."))
    return found
