"""The package layout: layers that import only downwards, no import circles, nothing that imports the tests, and the
version-0.1 module paths served from one place."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from pds_nerfstudio.old_paths import OLD_MODULES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pds_nerfstudio"
LAYERS = ("common", "score_distillation", "priors", "scenes", "regions", "parallel", "integration", "methods", "metrics", "cli")
"""pds_nerfstudio's subpackages, bottom-up; pnr_nerfstudio sits on top of all of them."""


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports_of(path: Path) -> Set[str]:
    """Every module of ours that a file imports, at its top or inside a function (``from pkg import module`` counts
    as the module)."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module in ("pds_nerfstudio", "pnr_nerfstudio") or node.module.count(".") == 1:
                names += [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(n for n in names if n.split(".")[0] in ("pds_nerfstudio", "pnr_nerfstudio", "tests"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in ("pds_nerfstudio", "pnr_nerfstudio", "tests"))
    return found


def our_modules() -> Dict[str, Path]:
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "pnr_nerfstudio").rglob("*.py")]
    return {module_name(path): path for path in files}


def layer(module: str) -> int:
    """A module's place bottom-up: pds_nerfstudio's layers in order, pnr_nerfstudio above them."""
    parts = module.split(".")
    if parts[0] == "pnr_nerfstudio":
        return len(LAYERS)
    return LAYERS.index(parts[1])


def test_ls_shows_the_layers():
    """Only the layers' subpackages, the package's ``__init__`` and the module that serves the old paths."""
    entries = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    assert entries == {*LAYERS, "__init__.py", "old_paths.py"}
    for name in LAYERS:
        assert (PACKAGE / name / "__init__.py").read_text().startswith('"""'), f"{name} says what the layer is"


def test_every_import_goes_down_the_layers_or_stays_in_its_own():
    modules = our_modules()
    upward = []
    for name, path in modules.items():
        if name in ("pds_nerfstudio", "pds_nerfstudio.old_paths"):
            continue  # the package's docstring and the old paths' table name every layer
        for imported in imports_of(path):
            target = imported if imported in modules else imported.rsplit(".", 1)[0]
            if target in ("pds_nerfstudio", "pnr_nerfstudio") or target not in modules:
                continue
            if layer(target) > layer(name):
                upward.append(f"{name} -> {target}")
    assert not upward, upward


def test_no_import_circles():
    modules = our_modules()
    graph = {
        name: {i if i in modules else i.rsplit(".", 1)[0] for i in imports_of(path)} & set(modules) - {name}
        for name, path in modules.items()
    }
    circles: List[List[str]] = []
    state: Dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, circles


def test_nothing_outside_the_tests_imports_them():
    """The package, the toy world, the benchmarks and the scripts import no module of ``tests``."""
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "pnr_nerfstudio").rglob("*.py"), *(ROOT / "toy_world").rglob("*.py")]
    files += [*(ROOT / "bench").rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in files if any(i.split(".")[0] == "tests" for i in imports_of(p))]
    offenders += [
        str(p.relative_to(ROOT)) for p in (ROOT / "scripts").glob("*") if re.search(r"\b(from|import) tests\b", p.read_text())
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("old", sorted(OLD_MODULES))
def test_each_old_module_path_serves_the_new_modules_names(old):
    """Every public name a version-0.1 module had is the new module's object under the old path."""
    module = importlib.import_module(old)
    for new in OLD_MODULES[old]:
        target = importlib.import_module(new)
        public = [n for n in vars(target) if not n.startswith("_") and getattr(vars(target)[n], "__module__", None) == new]
        for name in public:
            if any(hasattr(importlib.import_module(first), name) for first in OLD_MODULES[old][: OLD_MODULES[old].index(new)]):
                continue  # an earlier module of the list answers for this name
            assert getattr(module, name) is getattr(target, name), f"{old}.{name}"
    with pytest.raises(AttributeError, match="no attribute"):
        getattr(module, "no_such_name")


def test_old_paths_are_neither_files_nor_packages():
    """The old names are served by :mod:`pds_nerfstudio.old_paths` alone: no file or folder of the new layout has one."""
    for old in OLD_MODULES:
        relative = Path(*old.split("."))
        assert not (ROOT / relative.with_suffix(".py")).exists() and not (ROOT / relative).exists(), old


def test_importing_the_package_stays_cheap():
    """``import pds_nerfstudio`` (every ns-train start imports it through the plugin) loads neither nerfstudio nor torch."""
    code = "import sys, pds_nerfstudio; print(sorted(m for m in ('torch', 'nerfstudio', 'diffusers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"
