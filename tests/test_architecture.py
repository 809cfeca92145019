"""The shape of the house (docs/architecture.md, "Rooms"), checked on the code itself.

Every import counts, at module level or inside a function (the package imports inside functions
to start fast; such an import is an arrow all the same):

- no import cycle among the package's modules;
- arrows run downwards: leaves (errors, options, results, files) < graph < workbench < pruning <
  measure < report < workflow < cli and demo, and the floors hold transitively (nothing a
  module reaches, through any chain of imports, lies in a room above it);
- measuring and reporting use pruning through its public modules only (`PRUNING_API`);
- no module imports a private name of another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "onnxprune"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, module_level_only: bool) -> list[tuple[str, list[str]]]:
    """(imported module, names) of every `import` / `from ... import` in the file."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            inside = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if isinstance(child, ast.Import) and (top or not module_level_only):
                found.extend((alias.name, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and (top or not module_level_only):
                found.append((child.module, [alias.name for alias in child.names]))
            visit(child, inside)

    visit(tree, True)
    return [(name, names) for name, names in found if name.split(".")[0] == "onnxprune"]


def resolve(module: str, names: list[str]) -> list[str]:
    """The package modules an import statement loads (a `from pkg import module` names the module)."""
    targets = [module] if module in MODULES else []
    targets += [f"{module}.{name}" for name in names if f"{module}.{name}" in MODULES]
    return targets


ROOMS = {
    "onnxprune": 0,  # the package's __init__: errors at load, its API names resolved on first use
    "onnxprune.errors": 0,
    "onnxprune.options": 0,
    "onnxprune.results": 0,
    "onnxprune.files": 0,
    "onnxprune.graph": 1,
    "onnxprune.workbench": 2,
    "onnxprune.pruning": 3,
    "onnxprune.measure": 4,
    "onnxprune.report": 5,
    "onnxprune.workflow": 6,
    "onnxprune.cli": 7,
    "onnxprune.demo": 7,
    "onnxprune.__main__": 8,
}
# what the rooms above pruning's floor but below the workflow may use of it
PRUNING_API = ("onnxprune.pruning.levels", "onnxprune.pruning.methods", "onnxprune.pruning.oneshot")


def room(module: str) -> str:
    """The room (the longest `ROOMS` prefix) a module lies in."""
    return max((name for name in ROOMS if module == name or module.startswith(name + ".")), key=len)


def arrows() -> dict[str, set[str]]:
    """Every module to the package modules it imports, at module level or in a function."""
    return {
        name: {target for module, names in imports(path, False) for target in resolve(module, names)} - {name}
        for name, path in MODULES.items()
    }


def test_every_module_lies_in_a_room():
    assert [name for name in MODULES if not any(name == r or name.startswith(r + ".") for r in ROOMS)] == []


def test_no_import_cycle():
    graph = arrows()
    visiting, done, cycles = [], set(), []

    def walk(node):
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node) :] + [node])
            return
        visiting.append(node)
        for target in sorted(graph.get(node, ())):
            walk(target)
        visiting.pop()
        done.add(node)

    for name in sorted(graph):
        walk(name)
    assert cycles == [], " ; ".join(" -> ".join(cycle) for cycle in cycles)


def test_arrows_run_downwards():
    wrong = [
        f"{name} ({room(name)}) imports {target} ({room(target)})"
        for name, targets in arrows().items()
        for target in sorted(targets)
        if ROOMS[room(target)] > ROOMS[room(name)]
    ]
    assert wrong == []


def test_floors_hold_transitively():
    graph = arrows()
    wrong = []
    for name in graph:
        reached, frontier = set(), [name]
        while frontier:
            for target in graph.get(frontier.pop(), ()):
                if target not in reached:
                    reached.add(target)
                    frontier.append(target)
        above = sorted(t for t in reached if ROOMS[room(t)] > ROOMS[room(name)])
        wrong += [f"{name} reaches {above[0]}"] if above else []
    assert wrong == []


def test_measure_and_report_use_pruning_through_its_api():
    wrong = [
        f"{name} imports {target}"
        for name, targets in arrows().items()
        if room(name) in ("onnxprune.measure", "onnxprune.report")
        for target in targets
        if room(target) == "onnxprune.pruning" and target not in PRUNING_API
    ]
    assert wrong == []


def test_the_rules_catch_an_import_inside_a_function(tmp_path, monkeypatch):
    """A function-level import from the workbench into pruning is an arrow upwards (issue 26)."""
    fake = tmp_path / "onnxprune" / "workbench" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def late():\n    from onnxprune.pruning.select import smallest\n")
    monkeypatch.setitem(MODULES, "onnxprune.workbench.fake", fake)
    with pytest.raises(AssertionError, match="onnxprune.workbench.fake .* imports onnxprune.pruning.select"):
        test_arrows_run_downwards()


def test_no_private_name_crosses_a_module():
    wrong = []
    for name, path in MODULES.items():
        for module, names in imports(path, False):
            if module == name:
                continue
            wrong += [f"{name} imports {module}.{n}" for n in names if n.startswith("_") and n != "__version__"]
    assert wrong == []
