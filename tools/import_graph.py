"""Import graph of the kvsim package: cycles and layer violations (stdlib only, no imports run).

Reads every ``import``/``from ... import`` statement (module level *and* inside functions,
so that a cycle dodged with a function-local import is still reported) of ``kvsim/**/*.py``
with :mod:`ast`. Edges go to the most specific kvsim module named: ``from kvsim.plan import
search`` is an edge to ``kvsim.plan.search`` when that is a module, else to ``kvsim.plan``.

Also lists function-local imports that carry no ``# lazy: why`` comment (on the import, or
on a comment line just above its block of imports): a function-local import is kept only to
delay a heavy or optional dependency (torch, scipy, plotly, rich, CLI start-up), never to
dodge a cycle.

Usage: ``python tools/import_graph.py [ROOT]``; exit status 1 when a cycle or a layer
violation is found (unmarked lazy imports are reported, not fatal).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

#: layers, top first; a module may import only from its own layer or one below
LAYERS: tuple[tuple[str, ...], ...] = (
    ("kvsim.__main__", "kvsim.cli"),
    ("kvsim.commands",),
    ("kvsim.api",),
    ("kvsim.plan", "kvsim.validate"),
    ("kvsim.sim",),
    ("kvsim.pricing",),
    ("kvsim.methods",),
    ("kvsim.costmodel",),
    ("kvsim.hardware", "kvsim.models", "kvsim.traces"),
    ("kvsim.catalog", "kvsim.errors", "kvsim.specbase", "kvsim.jsonutil", "kvsim"),
)
#: folders that may not import one another although they share a layer
SIBLINGS_APART = (("kvsim.plan", "kvsim.validate"),)


def module_names(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted((root / "kvsim").rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path, mod: str, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level)`` for every kvsim import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod if is_pkg else mod.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            if t == "kvsim" or t.startswith("kvsim."):
                r = _resolve(t, modules)
                if r and r != mod:
                    out.append((r, node.lineno, id(node) in top))
    return out


def unmarked_lazy(path: Path) -> list[int]:
    """Lines of function-local imports (any package) with no ``# lazy:`` comment."""
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text, str(path))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top:
            continue
        seen = lines[node.lineno - 1:node.end_lineno]
        i = node.lineno - 2
        while i >= 0:
            st = lines[i].strip()
            if not (st == "" or st.startswith(("import ", "from ", "#", ")")) or st.endswith(",")):
                break
            seen.append(st)
            i -= 1
        if not any("# lazy:" in x for x in seen):
            out.append(node.lineno)
    return out


def layer_of(mod: str) -> int:
    best, rank = -1, len(LAYERS)
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (mod == prefix or mod.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    return rank


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(root: Path) -> dict:
    modules = module_names(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    edges = []
    for mod, path in modules.items():
        for dst, line, top in imports(path, mod, modules):
            graph[mod].add(dst)
            edges.append((mod, dst, line, top, path))
    bad_layer, bad_cli = [], []
    for src, dst, line, top, path in edges:
        where = f"{path.relative_to(root)}:{line}"
        if layer_of(dst) < layer_of(src):
            bad_layer.append(f"{where}: {src} imports {dst} (a higher layer)")
        for a, b in SIBLINGS_APART:
            for x, y in ((a, b), (b, a)):
                if src.startswith(x) and dst.startswith(y):
                    bad_layer.append(f"{where}: {src} imports {dst} (sibling folders stay apart)")
        lib = not (src.startswith("kvsim.commands") or src in ("kvsim.cli", "kvsim.__main__"))
        if lib and (dst.startswith("kvsim.commands") or dst == "kvsim.cli"):
            bad_cli.append(f"{where}: library module {src} imports {dst}")
    unmarked = [f"{p.relative_to(root)}:{line}" for p in modules.values() for line in unmarked_lazy(p)]
    return {"modules": len(modules), "edges": len(edges), "cycles": cycles(graph),
            "layer_violations": bad_layer, "cli_imports": bad_cli, "unmarked_lazy": unmarked}


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    r = check(root)
    print(f"{r['modules']} modules, {r['edges']} kvsim imports (module level and function-local)")
    print(f"cycles: {len(r['cycles'])}")
    for c in r["cycles"]:
        print("  " + " <-> ".join(c))
    print(f"layer violations: {len(r['layer_violations'])}")
    for v in r["layer_violations"]:
        print("  " + v)
    print(f"library modules importing kvsim.commands / kvsim.cli: {len(r['cli_imports'])}")
    for v in r["cli_imports"]:
        print("  " + v)
    print(f"function-local imports without a '# lazy:' reason: {len(r['unmarked_lazy'])}")
    for v in r["unmarked_lazy"]:
        print("  " + v)
    return 1 if (r["cycles"] or r["layer_violations"] or r["cli_imports"]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
