"""The import graph of the library, the Space and the app, read from the source with `ast`: no module imports itself
back through others (a cycle makes import order matter and hides which module owns a type), and the library never
imports the Space or Gradio (it must stay usable without them)."""

import ast
from pathlib import Path

from helpers.paths import REPO as ROOT
PACKAGES = ("steadydancer", "steadydancer_space")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files() -> dict[str, Path]:
    files = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    files["app"] = ROOT / "app.py"
    return files


def imported_names(module: str, path: Path) -> set[str]:
    """Every module `module` imports, at any depth of its code (function-level and `TYPE_CHECKING` imports count:
    the first run too, the second tie the types together), as absolute dotted names; `from x import y` counts as
    importing both x and x.y."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    files = project_files()
    graph = {}
    for module, path in files.items():
        targets = set()
        for name in imported_names(module, path):
            # The deepest project module the name refers to (a name imported from a module is that module).
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, components, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_find_cycles_reports_a_cycle_and_only_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_imported_names_resolve_relative_imports(tmp_path):
    path = tmp_path / "steadydancer" / "pose" / "prepare.py"
    path.parent.mkdir(parents=True)
    path.write_text("from .detection import PoseDetector\nfrom ..sizing import generation_size\nimport numpy\n")
    names = imported_names("steadydancer.pose.prepare", path)
    assert {"steadydancer.pose.detection", "steadydancer.sizing.generation_size", "numpy"} <= names


def test_no_import_cycles_among_project_modules():
    graph = import_graph()
    assert "steadydancer.pose.keypoints" in graph["steadydancer.pose.tracking"]  # the graph sees relative imports
    assert find_cycles(graph) == []


def test_the_library_never_imports_the_space_or_gradio():
    files = project_files()
    for module, path in files.items():
        if module.split(".")[0] != "steadydancer":
            continue
        roots = {name.split(".")[0] for name in imported_names(module, path)}
        assert not roots & {"steadydancer_space", "gradio", "app"}, module
