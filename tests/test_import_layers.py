"""The import layers: the runtime (sdk/steernpc) never imports training code, and no module
of either package imports itself back through others (no import circles).

Imports are read with `ast`, module level and inside functions alike: a function-level
import is still a dependency, it only runs later. An edge goes to the most specific module
named (`from steernpc import models` -> steernpc.models, `from steernpc.models import
resolve` -> steernpc.models); the parent packages it also runs (__init__) are not counted,
as a package importing its own submodules is not a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"steernpc": REPO / "sdk" / "steernpc", "steernpc_train": REPO / "training" / "steernpc_train"}


def module_files() -> dict[str, Path]:
    """{dotted module name: file} for every module of both packages."""
    modules = {}
    for package, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name `module` imports (absolute; relative imports resolved), skipping
    `if TYPE_CHECKING:` blocks, which never run."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node) for n in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import submodule` names the submodule, `from pkg.mod import name` the
            # module (import_graph drops the trailing `.name`).
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """{module: the modules of both packages it imports}."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path, module):
            while name and name not in modules:  # `steernpc.models.load_model` -> steernpc.models
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_cycle_finder_sees_function_level_imports(tmp_path):
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    (tmp_path / "m.py").write_text("def f():\n    from steernpc.models import load_model\n")
    assert "steernpc.models.load_model" in imported_names(tmp_path / "m.py", "steernpc.m")


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_runtime_imports_no_training_code():
    graph = import_graph()
    leaks = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.split(".")[0] == "steernpc"
                   for t in targets if t.split(".")[0] == "steernpc_train")  # fmt: skip
    assert not leaks, "the runtime imports training code:\n" + "\n".join(leaks)
