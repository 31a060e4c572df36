"""The layers import downward only, read from the source (module-level imports).

base <- ingest <- curate <- retrieval <- training <- serving <- deployment: a stage imports
the stages below it and never one above. `base` imports no stage and no Dagster;
the pure modules of a stage (everything but its asset modules) import no Dagster,
so worker processes and torchrun ranks start without it; `resources` imports no
stage package when it is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "curate", "retrieval", "training", "serving", "deployment"]
ASSET_MODULES = {"assets.py", "drift_assets.py", "rollout_assets.py"}
"""The Dagster-facing modules of a stage; the rest of a stage is pure."""


def module_imports(path: Path) -> set[str]:
    """Modules imported at module level (not inside functions: those are lazy on purpose)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks are not imports at run time
            continue
    return found


def all_imports(path: Path) -> set[str]:
    """Every import anywhere in the file, function bodies included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports_package(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


@pytest.mark.parametrize("path", files("llama_assets/base"), ids=lambda p: p.name)
def test_base_imports_no_stage_and_no_dagster(path):
    modules = all_imports(path)
    assert not imports_package(modules, "dagster"), path
    for other in [*STAGES, "resources", "sensors", "evals"]:
        assert not imports_package(modules, f"llama_assets.{other}"), (path, other)
    assert {m for m in modules if m.startswith("llama_assets")} <= {
        m for m in modules if m.startswith("llama_assets.base")
    }, path


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_the_stages_below_it(stage):
    above = STAGES[STAGES.index(stage) + 1 :]
    for path in files(f"llama_assets/{stage}"):
        modules = all_imports(path)
        for higher in above:
            assert not imports_package(modules, f"llama_assets.{higher}"), (path, higher)
        for top in ("llama_assets.runner", "llama_assets.jobs", "llama_assets.definitions"):
            assert not imports_package(modules, top), (path, top)
        assert not imports_package(modules, "sensors"), path


@pytest.mark.parametrize("stage", STAGES)
def test_pure_stage_modules_import_no_dagster(stage):
    for path in files(f"llama_assets/{stage}"):
        if path.name in ASSET_MODULES:
            continue
        assert not imports_package(all_imports(path), "dagster"), path


@pytest.mark.parametrize("path", files("resources"), ids=lambda p: p.name)
def test_resources_import_no_stage_package_at_import(path):
    modules = module_imports(path)
    for stage in STAGES:
        assert not imports_package(modules, f"llama_assets.{stage}"), (path, stage)
