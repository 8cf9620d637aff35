"""The layering rules, checked on the source: no import circles (imports inside functions and under
TYPE_CHECKING count too), profiles/ and simulators/ never import csms/, csms/ never imports the
simulators, the demo or the benchmarks, and nothing outside the composition root sets attributes
on the daemon."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("csms", "profiles", "simulators", "demo", "bench")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that ``import name`` runs (a package, or a module within one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Every module of ours ``module`` imports, wherever the import statement sits."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[:len(here) - (node.level - 1)]
                base = ".".join(here + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for name in names:
            target = _resolve(name)
            if target is None or target == module:
                continue
            out.add(target)
            # Importing a.b.c runs the package a.b first (unless we are inside that package).
            parts = target.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in MODULES and not module.startswith(parent + "."):
                    out.add(parent)
    return out


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}
#: The packages held to "no circles". The simulators are not yet: their version layer and their
#: station core refer to each other (lazily and for type checking), which their owners untangle.
CIRCLE_FREE = ("csms", "profiles", "demo", "bench")


def _cycles(packages: tuple[str, ...] = CIRCLE_FREE) -> list[list[str]]:
    """Strongly connected components with more than one module among ``packages`` (Tarjan, iterative)."""
    graph = {m: {t for t in targets if t.split(".")[0] in packages}
             for m, targets in GRAPH.items() if m.split(".")[0] in packages}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_sees_a_circle() -> None:
    """The check itself can fail: a lazy import back into the importer is found."""
    saved = dict(GRAPH)
    try:
        GRAPH["csms.bus"] = GRAPH["csms.bus"] | {"csms.app"}
        assert any("csms.app" in c and "csms.bus" in c for c in _cycles())
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def test_no_import_circles() -> None:
    assert _cycles() == []


@pytest.mark.parametrize(("importer", "forbidden"), [
    ("profiles", ("csms", "simulators", "demo", "bench")),
    ("simulators", ("csms", "demo", "bench")),
    ("csms", ("simulators", "demo", "bench")),
])
def test_layers(importer: str, forbidden: tuple[str, ...]) -> None:
    wrong = {module: sorted(t for t in targets if t.split(".")[0] in forbidden)
             for module, targets in GRAPH.items() if module.split(".")[0] == importer}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_daemon_is_only_assembled_in_the_composition_root() -> None:
    """Nothing in csms (but csms/app.py) assigns attributes onto a daemon object."""
    offenders = []
    for module, path in MODULES.items():
        if not module.startswith("csms.") or module == "csms.app":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id == "daemon":
                    offenders.append(f"{module}:{node.lineno}")
                elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute) \
                        and target.value.attr == "daemon":
                    offenders.append(f"{module}:{node.lineno}")
    assert offenders == []


#: The one module of csms that draws (``csms report``'s plots), imported only by the command itself.
PLOTTING = "csms.report.render"


def test_heavy_imports_stay_where_they_are_used() -> None:
    """matplotlib is imported only inside the functions that draw; in csms only by the report's
    renderer, which only the ``report`` command imports, inside its function (never the daemon)."""
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top_level if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in top_level if isinstance(n, ast.ImportFrom)]
        if module.startswith("csms") and PLOTTING in names:
            raise AssertionError(f"{module} imports {PLOTTING} at module level")
        if module.startswith("csms") and module != PLOTTING:
            assert not any(name.startswith("matplotlib") for name in names), module
            imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not any("matplotlib" in ast.dump(n) for n in imports), module
    assert sorted(m for m, targets in GRAPH.items() if PLOTTING in targets) == ["csms.report"]
