"""The source tree's shape: dependencies run one way, no private names across modules, no import cycles.

Read from the code itself (``ast``), every import counted, also those inside functions. The layers, from
the bottom: shared machinery (errors, ``_io``, ``_validate``, progress, results, paper), models, data, train,
the graph, the algorithms (visualize, analysis) beside the report (built from saved files only: it needs
nothing above the models), the experiments (the demo ends with a report), and on top the CLI and the
package's public API. A module may import from its own layer or below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "zfnet"

LAYERS = {
    "zfnet.errors": 0, "zfnet._io": 0, "zfnet._validate": 0, "zfnet.progress": 0, "zfnet.results": 0,
    "zfnet.paper": 0, "zfnet.cores": 0, "zfnet.distributed": 0,
    "zfnet.models": 1,
    "zfnet.data": 2,
    "zfnet.train": 3, "zfnet.scan": 3,
    "zfnet.graph": 4,
    "zfnet.visualize": 5, "zfnet.analysis": 5, "zfnet.report": 5,
    "zfnet.experiments": 6,
    "zfnet.cli": 7, "zfnet.__main__": 7,
    "zfnet": 8,  # the package's own __init__: the public API, importing lazily from every layer
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    for depth in range(module.count(".") + 1, 0, -1):
        prefix = ".".join(module.split(".")[:depth])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def _imports(path: Path) -> list[tuple[str, list[str], int, bool]]:
    """(imported module, imported names, line, inside a function) of every zfnet import of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "zfnet" or target.startswith("zfnet."):
                names = [a.name for a in node.names]
                # `from . import x` / `from .pkg import mod`: a name may be a submodule
                found.append((target, names, node.lineno, id(node) in functions))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("zfnet"):
                    found.append((alias.name, [], node.lineno, id(node) in functions))
    return found


FILES = sorted(SRC.rglob("*.py"))


def _is_module(name: str) -> bool:
    path = SRC.parent / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_every_module_belongs_to_a_layer():
    for path in FILES:
        _layer(_module_name(path))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_dependencies_run_one_way(path):
    module = _module_name(path)
    if module == "zfnet":
        return
    mine = _layer(module)
    for target, names, line, _ in _imports(path):
        if target == "zfnet" and names == ["__version__"]:
            continue  # a constant of the package's __init__, which imports nothing to define it
        targets = [f"{target}.{n}" for n in names if _is_module(f"{target}.{n}")] or [target]
        for t in targets:
            assert _layer(t) <= mine, f"{module} (layer {mine}) imports {t} (layer {_layer(t)}) at line {line}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_private_names_across_modules(path):
    """A ``_name`` is its module's own; a ``_module`` is its package's own (``zfnet._io`` is the whole
    package's machinery, ``zfnet.models._registry`` the models package's)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for target, names, line, _ in _imports(path):
        for name in names:
            full = f"{target}.{name}"
            if _is_module(full):
                owner = target
            else:
                assert not name.startswith("_") or name.startswith("__"), \
                    f"{module} imports the private name {name} of {target} at line {line}"
                owner = target.rpartition(".")[0]
                full = target
            private = [i for i, part in enumerate(full.split(".")) if part.startswith("_") and i > 0]
            if private:
                home = ".".join(full.split(".")[:private[0]])
                assert package == home or package.startswith(home + "."), \
                    f"{module} imports {full}, private to {home}, at line {line}"
            del owner


def test_no_import_cycles_between_modules():
    """Module-level imports only (a function-level import runs later and cannot deadlock an import)."""
    graph: dict[str, set[str]] = {}
    for path in FILES:
        module = _module_name(path)
        edges = graph.setdefault(module, set())
        for target, names, _, inside in _imports(path):
            if inside:
                continue
            subs = [f"{target}.{n}" for n in names if _is_module(f"{target}.{n}")]
            for t in subs or [target]:
                if t != module:
                    edges.add(t)
                # Importing zfnet.train.x runs zfnet/train/__init__ first: an edge to the package too
                # (scan -> train.distributed -> train/__init__ -> train.evaluate -> scan is a cycle).
                parts = t.split(".")
                for i in range(2, len(parts)):
                    package = ".".join(parts[:i])
                    if package != module and not module.startswith(package + ".") and _is_module(package):
                        edges.add(package)
    def parent_of(child: str, parent: str) -> bool:
        return child.startswith(parent + ".")

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if parent_of(node, nxt):  # a module using its own package (its siblings): how packages work
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
