"""The import graph of a package, read from its source (lazy imports inside functions count too), and the
checks the house rules make on it: cycles, and arrows that point up a floor. Used by tests/test_layout.py on
tc_lib and on planted packages built in a tmp folder (to show that the checks can fail)."""

from __future__ import annotations

import ast
from pathlib import Path


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file for every module of the package at `root` (a package's __init__ is the package)."""
    names = {}
    for path in root.rglob("*.py"):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (before looking at the imported names)."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports. `from a import b` counts as a.b when b is a module."""
    names = module_names(root)
    graph = {}
    for name, path in names.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, path, node)
                for alias in node.names:
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in names else target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in names and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first walk, as the path that closes it. A package's own modules
    importing its __init__ (its public names) close no cycle: the __init__ only re-exports them."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if node.startswith(dep + "."):
                continue  # a module of a package using its package's public names
            if state.get(dep) == 1:
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def read_floors(markdown: str) -> dict[str, int]:
    """The floors stated in ARCHITECTURE.md's ```floors block: lines `N: name name ...` (a package name
    stands for its modules); every module not named is on floor 0, the core."""
    block = markdown.split("```floors\n", 1)[1].split("```", 1)[0]
    floors = {}
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            level, names = line.split(":", 1)
            floors.update({name: int(level) for name in names.split()})
    return floors


def _room(name: str, floors: dict[str, int]) -> str | None:
    """The longest listed name that is `name` or a package above it."""
    return max((p for p in floors if name == p or name.startswith(p + ".")), key=len, default=None)


def upward(graph: dict[str, set[str]], floors: dict[str, int], *, packages: set[str]) -> list[tuple[str, str]]:
    """(importer, imported) pairs that break the floors: the imported module is on a higher floor, or it
    is in another package of the same floor above the core (rooms stand side by side: grid and memory
    never import each other)."""
    bad = []
    for name, deps in graph.items():
        mine = _room(name, floors)
        for dep in deps:
            theirs = _room(dep, floors)
            here, there = floors.get(mine, 0), floors.get(theirs, 0)
            sideways = here == there > 0 and mine != theirs and {mine, theirs} <= packages
            if there > here or sideways:
                bad.append((name, dep))
    return sorted(bad)


def missing(root: Path) -> list[str]:
    """Relative imports that name no module of the package (a lazy one inside a function fails only when
    that function runs: after a module moved, say)."""
    names = module_names(root)
    found = []
    for name, path in names.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level and _resolve(name, path, node) not in names:
                found.append(f"{name} imports {'.' * node.level}{node.module or ''}: no such module "
                             f"({_resolve(name, path, node)})")
    return sorted(found)


def problems(root: Path, floors: dict[str, int]) -> list[str]:
    """Every cycle, every arrow against the floors and every relative import of nothing in the package
    at `root`, one line each."""
    graph = imports(root)
    packages = {name for name, path in module_names(root).items() if path.name == "__init__.py"}
    return (missing(root) + [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
            + [f"upward import: {a} (floor {floors.get(_room(a, floors), 0)}) imports {b} "
               f"(floor {floors.get(_room(b, floors), 0)})" for a, b in upward(graph, floors, packages=packages)])
