"""The package's import graph has no cycle: each module builds only on modules below it."""

import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "pipeline")


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def imports(path: str, name: str, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, at the top or inside functions alike."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # `from . import x` names a module; `from .x import y` a name in x
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    paths = {module_name(os.path.join(d, f)): os.path.join(d, f)
             for d, _, files in os.walk(PACKAGE) for f in files if f.endswith(".py")}
    return {name: imports(path, name, set(paths)) for name, path in paths.items()}


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle, as the modules around it, or [] (depth-first search)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return []

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_the_package_has_no_import_cycle():
    edges = graph()
    assert "pipeline.mixture" in edges and "pipeline.cache" in edges["pipeline.mixture"]
    assert cycle(edges) == [], " -> ".join(cycle(edges))


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []
