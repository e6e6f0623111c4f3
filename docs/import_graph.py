"""The import graph of pyro_lvm, its layers, and the check that imports only point downwards.

    .venv/bin/python docs/import_graph.py      # writes docs/import_graph.png, prints the edges

The picture shows modules and packages (imports inside a package are left out of it).

Each module's imports of other pyro_lvm modules are read from its source (``ast``, nothing is
imported). :data:`LAYERS` gives every module a layer, lowest first; a module may import
modules of its own layer or below, never above, and the graph has no cycles.
tests/test_architecture.py runs :func:`violations` on every test run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_lvm"

# Lowest first. A module belongs to the first layer with a prefix that matches its dotted
# name (a package's prefix covers its modules).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("_checks", "rng", "files", "figures", "distributions", "nn", "rows",
                     "distributed")),
    ("data sets, the contract", ("datasets", "contract")),
    ("effect handlers", ("handlers",)),
    ("models and guides", ("models", "guides")),
    ("objectives and the fit loop", ("infer",)),
    ("diagnostics", ("diagnostics",)),
    ("saved models", ("saving",)),
    ("recipes and the HTML page", ("recipes", "report")),
    ("report sections", ("report_sections",)),
    ("runs", ("runs",)),
    ("the command", ("cli", "__main__", "__init__")),
]


def module_name(path: Path) -> str:
    """``pyro_lvm/infer/fit.py`` -> ``infer.fit``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the layer that holds ``module``."""
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise KeyError(f"pyro_lvm.{module} is in no layer: add it to LAYERS in {__file__}")


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
        if not (base == "pyro_lvm" or base.startswith("pyro_lvm.")):
            return []
        base = base[len("pyro_lvm"):].lstrip(".")
    else:
        here = module.split(".") if module != "__init__" else []
        package = here if is_package else here[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    if node.module is None or base == "":  # from . import x / from pyro_lvm import x
        return [f"{base}.{a.name}".lstrip(".") for a in node.names]
    return [base]


def imports() -> dict[str, set[str]]:
    """Every pyro_lvm module and the pyro_lvm modules it imports (at any depth of its code)."""
    modules = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                found.update(_resolve(module, path.name == "__init__.py", node))
            elif isinstance(node, ast.Import):
                found.update(a.name[len("pyro_lvm."):] for a in node.names
                             if a.name.startswith("pyro_lvm."))
        # keep the longest known module name for each import (x.y.Name -> x.y)
        resolved = set()
        for name in found:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                resolved.add(name)
        graph[module] = resolved
    return graph


def violations(graph: dict[str, set[str]] | None = None) -> list[str]:
    """Upward imports and import cycles, as sentences (empty when the layering holds)."""
    graph = imports() if graph is None else graph
    found = [f"{a} (layer {LAYERS[layer_of(a)][0]!r}) imports {b} (layer "
             f"{LAYERS[layer_of(b)][0]!r}, above it)"
             for a in sorted(graph) for b in sorted(graph[a]) if layer_of(b) > layer_of(a)
             and not a.endswith("__init__") and a != "__init__"]
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append("import cycle: " + " -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between top-level modules and packages (``infer.fit`` -> ``infer``), without
    the imports inside a package and without the package's ``__init__`` re-exports."""
    out: dict[str, set[str]] = {}
    for module, deps in graph.items():
        if module == "__init__":
            continue
        top = module.split(".")[0]
        out.setdefault(top, set()).update(
            d.split(".")[0] for d in deps if d.split(".")[0] != top and d != "__init__")
    return out


def draw(graph: dict[str, set[str]], path: Path) -> None:
    """The package-level graph as a picture: one row per layer, lowest at the bottom, an
    arrow from each module or package to what it imports."""
    import sys

    sys.path.insert(0, str(ROOT))
    from pyro_lvm.figures import new_figure

    shown = packages(graph)
    rows: dict[int, list[str]] = {}
    for m in sorted(shown):
        rows.setdefault(layer_of(m), []).append(m)
    fig = new_figure(12, 0.75 * len(LAYERS), dpi=120)
    ax = fig.add_axes([0.22, 0.01, 0.77, 0.98])
    pos = {}
    for rank, names in rows.items():
        for i, m in enumerate(names):
            pos[m] = ((i + 0.5) / len(names), rank)
    for m, deps in shown.items():
        for d in deps:
            (x0, y0), (x1, y1) = pos[m], pos[d]
            ax.annotate("", xy=(x1, y1 + 0.15), xytext=(x0, y0 - 0.15),
                        arrowprops={"arrowstyle": "->", "color": "0.6", "lw": 0.7,
                                    "shrinkA": 0, "shrinkB": 0})
    for m, (x, y) in pos.items():
        label = m + ("/" if (PACKAGE / m).is_dir() else "")
        ax.text(x, y, label, ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": f"C{y % 10}"})
    for rank, (label, _) in enumerate(LAYERS):
        ax.text(-0.02, rank, label, ha="right", va="center", fontsize=9, weight="bold")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.6, len(LAYERS) - 0.4)
    ax.axis("off")
    fig.savefig(path)


if __name__ == "__main__":
    graph = imports()
    for problem in violations(graph):
        print("VIOLATION:", problem)
    for m in sorted(graph):
        print(f"{m:32s} [{LAYERS[layer_of(m)][0]}] -> {', '.join(sorted(graph[m])) or '-'}")
    draw(graph, Path(__file__).with_name("import_graph.png"))
    print("wrote docs/import_graph.png")
