"""Numbers about the package's shape: lines per module, the largest functions, config classes and the
fields they re-declare, function-local imports, and import cycles (strongly connected components of
the import graph, function-local imports included, so a cycle hidden inside a function still counts).

    python tools/layout_stats.py [PACKAGE_DIR]      # default: wellread
"""

from __future__ import annotations

import ast
import collections
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(tree: ast.AST, name: str, is_pkg: bool, modules: set[str]) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import in ``tree``. ``from P import m`` of a submodule
    ``m`` depends on ``P.m`` (the package ``P`` is only its parent, imported first by Python itself)."""
    out = []
    pkg = name if is_pkg else name.rpartition(".")[0]

    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, inner) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - child.level + 1]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in modules]
                out.extend((s, inner) for s in subs)
                if len(subs) < len(child.names):
                    out.append((base, inner))
            visit(child, inner)

    visit(tree, False)
    return out


def sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            strong(v)
    return out


def config_fields(node: ast.ClassDef) -> tuple[list[str], list[str]]:
    """The settings a config class declares (``field(..., help=...)``) and those it borrows (``same(...)``)."""
    own, borrowed = [], []
    for s in node.body:
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and isinstance(s.value, ast.Call):
            call = ast.unparse(s.value.func)
            if call == "field" and any(k.arg == "help" for k in s.value.keywords):
                own.append(s.target.id)
            elif call == "same":
                borrowed.append(s.target.id)
    return own, borrowed


def main(root: Path) -> None:
    files = sorted(root.rglob("*.py"))
    modules = {module_name(root, f): f for f in files}
    graph: dict[str, set[str]] = collections.defaultdict(set)
    local_internal = local_all = 0
    functions = []
    configs: dict[str, list[str]] = {}  # config class -> the settings it declares itself (type, help, bounds)
    same: dict[str, list[str]] = {}  # config class -> the settings it borrows from another (config.same)
    lines = {}
    for mod, f in modules.items():
        text = f.read_text(encoding="utf-8")
        lines[mod] = len(text.splitlines())
        tree = ast.parse(text)
        for target, local in imports(tree, mod, f.name == "__init__.py", set(modules)):
            local_all += local
            if target in modules and target != mod:
                graph[mod].add(target)
                local_internal += local
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{mod}.{node.name}"))
            if isinstance(node, ast.ClassDef) and any(
                    "dataclass" in ast.unparse(d) or "configclass" in ast.unparse(d) for d in node.decorator_list):
                own, borrowed = config_fields(node)
                if own or borrowed:
                    configs[f"{mod}.{node.name}"] = own
                    same[f"{mod}.{node.name}"] = borrowed
    print(f"modules: {len(modules)}, lines: {sum(lines.values())}")
    for mod, n in sorted(lines.items(), key=lambda kv: -kv[1]):
        print(f"  {n:5d}  {mod}")
    print("largest functions:")
    for n, name in sorted(functions, reverse=True)[:8]:
        print(f"  {n:5d}  {name}")
    declared = collections.Counter(n for names in configs.values() for n in names)
    again = {n: c for n, c in declared.items() if c > 1}
    print(f"config classes (dataclasses with help= fields): {len(configs)}")
    print(f"fields declared in more than one config class: {len(again)} names, "
          f"{sum(again.values()) - len(again)} re-declarations")
    for n, c in sorted(again.items(), key=lambda kv: -kv[1]):
        where = ", ".join(sorted(k.rsplit(".", 1)[1] for k, names in configs.items() if n in names))
        print(f"  {c:3d}x {n}  ({where})")
    print(f"settings borrowed with config.same (declared once, elsewhere): {sum(map(len, same.values()))}")
    print(f"function-local imports: {local_all} (of package modules: {local_internal})")
    cycles = sccs(graph)
    print(f"import cycles (function-local imports included): {len(cycles)}")
    for comp in cycles:
        print("  " + " <-> ".join(comp))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "wellread"))
