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

KIT = Path(__file__).resolve().parents[2] / "kit"
SCRIPTS = KIT.parent / "scripts"

# The kit's packages and what each may import (its own package is always allowed). Imports run one
# way: core at the bottom; methods and adapters on core; upstreams on adapters; the run folder on
# core alone (torch-free where it reads); evaluation on the run folder and methods; the run on all
# of them; the report on the run folder and evaluation; the API (kit/api.py, kit/__init__.py) and
# the command line on top.
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "methods": {"core"},
    "adapters": {"core"},
    "upstreams": {"core", "adapters"},
    "rundir": {"core"},
    "evaluation": {"core", "methods", "adapters", "rundir"},
    "run": {"core", "methods", "adapters", "upstreams", "rundir", "evaluation"},
    "report": {"core", "rundir", "evaluation"},
    "api": {"core", "methods", "adapters", "upstreams", "rundir", "evaluation", "run", "report"},
    "cli": {"core", "methods", "adapters", "upstreams", "rundir", "evaluation", "run", "report", "api"},
    "__init__": {"core", "api"},
    "__main__": {"cli"},  # python -m kit <command>: the command line's table of commands
}
# Imports that run against MAY_IMPORT today, each to be removed; the list only shrinks.
KNOWN_UPWARD: dict[str, set[str]] = {}
UPSTREAM_PACKAGES = {"models", "utils", "detectron2"}
# What the audit and the report import at module level: `python -m kit.evaluation.audit` and
# `python -m kit.report.page` start without torch.
TORCH_FREE_AT_MODULE_LEVEL = {
    *("kit.core.errors", "kit.core.display", "kit.core.files", "kit.core.table", "kit.rundir"),
    "kit.evaluation.audit",
    *("kit.report.layers", "kit.report.pictures"),
}

# What the setup engine (scripts/upstream/) shares with cam, bench, eval and demo.
SHARED = {"scripts.upstream.config", "scripts.upstream.errors"}
# Imports between the other subpackages that the code has today; none may be added. `make cam`'s
# offline fallback draws demo images; `make eval` measures on the demo set with the demo model.
CROSSINGS = {
    "bench/driver.py": {"scripts.demo.shapes"},  # the scale row explains synthetic shapes
    "bench/large_image.py": {"scripts.demo.shapes"},  # a photo of tiled shapes the demo detector finds
    "bench/drise_fidelity.py": {"scripts.demo.shapes"},  # D-RISE's fidelity on the demo's sample shapes
    # Ultralytics' own CAM, timed beside the kit on the model the kit loaded
    "bench/ultralytics_worker.py": {"scripts.eval.ultralytics_cam", "scripts.eval.ultralytics_side"},
    "cam/launch.py": {"scripts.demo.shapes"},
    "eval/family.py": {"scripts.demo.shapes"},  # every family is measured on the demo's held-out shapes
    "eval/ultralytics_side.py": {"scripts.demo.shapes", "scripts.demo.ultralytics_train"},  # the demo's set
}


def package_of(path: Path) -> str:
    """The kit package a file belongs to: 'core' for kit/core/engine.py, 'api' for kit/api.py."""
    rel = path.relative_to(KIT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_modules(path: Path, *, module_level_only: bool = False) -> set[str]:
    """The dotted kit modules ``path`` imports, at any depth (a lazy import inside a function counts)
    unless ``module_level_only``: 'from kit.core import engine' gives 'kit.core.engine'."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("kit.")}


def kit_imports(path: Path) -> set[str]:
    """The kit packages ``path`` imports ('kit.core.engine' -> 'core'; 'from kit import api' -> 'api')."""
    return {name.split(".")[1] for name in imported_modules(path)} - {package_of(path)}


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


KIT_FILES = sorted(KIT.rglob("*.py"))


@pytest.mark.parametrize("path", KIT_FILES, ids=lambda p: str(p.relative_to(KIT)))
def test_imports_run_one_way_between_the_packages(path: Path) -> None:
    own = package_of(path)
    assert own in MAY_IMPORT, f"{path.relative_to(KIT)}: a new package; give it its place in MAY_IMPORT"
    allowed = MAY_IMPORT[own] | KNOWN_UPWARD.get(str(path.relative_to(KIT)), set())
    assert kit_imports(path) <= allowed, kit_imports(path) - allowed


def test_every_known_upward_import_is_still_there() -> None:
    """An upward import the code no longer has leaves KNOWN_UPWARD too, so the list only shrinks."""
    for rel, names in KNOWN_UPWARD.items():
        assert kit_imports(KIT / rel) >= names, rel


def test_the_packages_have_no_cycle() -> None:
    """MAY_IMPORT itself runs one way: no package reaches itself through the others."""
    for start in MAY_IMPORT:
        seen, todo = set(), list(MAY_IMPORT[start])
        while todo:
            name = todo.pop()
            assert name != start, f"{start} reaches itself"
            if name not in seen:
                seen.add(name)
                todo.extend(MAY_IMPORT[name])


@pytest.mark.parametrize("path", sorted(KIT.rglob("*.py")), ids=lambda p: str(p.relative_to(KIT)))
def test_no_kit_module_imports_an_upstream_at_module_level(path: Path) -> None:
    """Upstream code is imported lazily, from its checkout, by kit.upstreams.loaders only."""
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
    probe = KIT / "core" / "probe_for_the_test.py"
    try:
        probe.write_text(
            "import kit.rundir.writer as o\nfrom kit import api\n\n"
            "def f():\n    from kit.run.runner import run\n    import models.yolo\n"
        )
        assert kit_imports(probe) == {"rundir", "api", "run"}
        assert top_level_imports(probe) == {"kit"}  # the upstream import is lazy: allowed
    finally:
        probe.unlink()
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from scripts.demo import shapes\n\nimport scripts.upstream.config as c\n")
    assert scripts_imports(probe) == {"scripts.demo.shapes", "scripts.upstream.config"}


@pytest.mark.parametrize(
    "path",
    [KIT / "evaluation" / "audit.py", *(KIT / "report" / f"{m}.py" for m in ("page", "layers", "pictures"))],
    ids=str,
)
def test_the_audit_and_the_report_start_without_torch(path: Path) -> None:
    """At module level they import only torch-free modules (the rest lazily, when a run needs it)."""
    names = imported_modules(path, module_level_only=True)
    assert all(any(n == ok or n.startswith(ok + ".") for ok in TORCH_FREE_AT_MODULE_LEVEL) for n in names), (
        names
    )
