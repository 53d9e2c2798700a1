"""No module of ``fabric/`` depends, however indirectly, on itself.

The graph is read statically (``ast``), so nothing is imported: every
``import`` and ``from ... import`` counts, at module level or inside a
function, under ``if TYPE_CHECKING`` or not, because each of them is a
dependency that has to point down the layers. ``from package import name``
is an edge to ``package.name`` when that is a module of fabric, else to
``package`` itself. Importing a submodule also runs its packages'
``__init__``; that implied edge is not counted (every package whose
``__init__`` re-exports its submodules would otherwise be a "cycle").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[3] / "fabric"


def module_names(root: Path) -> dict[str, Path]:
    """Every module under ``root`` (a package directory) by dotted name."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` one import statement depends on."""
    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in known:
                found.add(alias.name)
        return found
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        # A relative import counts from this module's package (a package's own
        # __init__ is its package).
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    for alias in node.names:
        candidate = f"{source}.{alias.name}"
        if candidate in known:
            found.add(candidate)
        elif source in known:
            found.add(source)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of the same tree it imports (anywhere in its body)."""
    modules = module_names(root)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, name, path.name == "__init__.py", known)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycle_groups(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that reach each other (strongly connected, more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(start: str) -> None:
        # Tarjan's algorithm, iterative: fabric's graph is deep enough to matter for recursion.
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)

    for name in sorted(graph):
        if name not in index:
            connect(name)
    return sorted(groups, key=min)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path ``a -> ... -> a``) per group of :func:`cycle_groups`."""
    return [_cycle_in(graph, group) for group in cycle_groups(graph)]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest closed path through the group's first module (breadth-first)."""
    start = min(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & group):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_fabric_has_no_import_cycle():
    graph = import_graph(PACKAGE_ROOT)
    assert len(graph) > 100, f"only {len(graph)} modules found under {PACKAGE_ROOT}"
    groups = cycle_groups(graph)
    assert not groups, "import cycles in fabric/:\n" + "\n".join(
        f"{' -> '.join(_cycle_in(graph, group))} (modules in this cycle: {', '.join(sorted(group))})"
        for group in groups)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


@pytest.mark.parametrize("files, cycle", [
    ({"pkg/__init__.py": "", "pkg/a.py": "from pkg import b\n", "pkg/b.py": "import pkg.a\n"},
     ["pkg.a", "pkg.b", "pkg.a"]),
    # The edge that closes the cycle is a function-level, relative import.
    ({"pkg/__init__.py": "", "pkg/a.py": "from pkg.sub.b import thing\n",
      "pkg/sub/__init__.py": "", "pkg/sub/b.py": "thing = 1\ndef f():\n    from .c import other\n",
      "pkg/sub/c.py": "from ..a import x\n"},
     ["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]),
    # A TYPE_CHECKING import is a dependency too.
    ({"pkg/__init__.py": "", "pkg/a.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg.b import B\n",
      "pkg/b.py": "from pkg import a\n"},
     ["pkg.a", "pkg.b", "pkg.a"]),
])
def test_the_check_finds_and_names_a_cycle(tmp_path, files, cycle):
    assert find_cycles(import_graph(_write(tmp_path, files))) == [cycle]


def test_a_package_reexporting_its_modules_is_no_cycle(tmp_path):
    files = {"pkg/__init__.py": "from pkg.a import A\n", "pkg/a.py": "from pkg.b import B\nA = 1\n",
             "pkg/b.py": "B = 2\n", "pkg/c.py": "from pkg import A\n"}
    graph = import_graph(_write(tmp_path, files))
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": set(), "pkg.c": {"pkg"}}
    assert find_cycles(graph) == []
