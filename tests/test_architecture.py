"""The shape of the house (docs/architecture.md), checked on the code itself.

- no import cycle among the package's modules (imports at module level; an import inside a
  function is the package's way to stay fast to start, and is checked by the room rules);
- arrows run downwards: the graph room imports no torch workbench, pruning, measuring,
  reporting or CLI code, the workbench none of pruning, measuring, reporting or the CLI;
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


def test_no_import_cycle():
    graph = {
        name: {target for module, names in imports(path, True) for target in resolve(module, names)} - {name}
        for name, path in MODULES.items()
    }
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


ROOM_RULES = {
    "onnxprune.graph": ("onnxprune.workbench", "onnxprune.pruning", "onnxprune.measure", "onnxprune.report",
                        "onnxprune.cli", "onnxprune.demo"),
    "onnxprune.workbench": ("onnxprune.pruning", "onnxprune.measure", "onnxprune.report", "onnxprune.cli",
                            "onnxprune.demo"),
    "onnxprune.report": ("onnxprune.pruning", "onnxprune.cli", "onnxprune.demo"),
}  # fmt: skip


@pytest.mark.parametrize("room", sorted(ROOM_RULES))
def test_arrows_run_downwards(room):
    wrong = []
    for name, path in MODULES.items():
        if name == room or name.startswith(room + "."):
            for module, names in imports(path, False):
                for target in resolve(module, names) or [module]:
                    if target.startswith(ROOM_RULES[room]):
                        wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_no_private_name_crosses_a_module():
    wrong = []
    for name, path in MODULES.items():
        for module, names in imports(path, False):
            if module == name:
                continue
            wrong += [f"{name} imports {module}.{n}" for n in names if n.startswith("_") and n != "__version__"]
    assert wrong == []
