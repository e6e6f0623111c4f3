"""The layers of docs/architecture.md hold: imports point downwards only, and no cycles."""

from pathlib import Path

from fixtures import load_script

DOCS = Path(__file__).parents[1] / "docs"


def _graph_module():
    return load_script(DOCS / "import_graph.py")


def test_imports_point_downwards_and_do_not_loop():
    graph = _graph_module()
    edges = graph.imports()
    assert {"cli", "runs", "recipes", "contract", "infer.fit"} <= set(edges)
    assert graph.violations(edges) == []


def test_the_check_catches_an_upward_import_and_a_cycle():
    graph = _graph_module()
    edges = graph.imports()
    upward = {**edges, "contract": {"infer.fit"}}
    assert any("contract" in v and "above it" in v for v in graph.violations(upward))
    loop = {**edges, "rng": {"files"}, "files": {"rng"}}
    assert any(v.startswith("import cycle") for v in graph.violations(loop))


def test_every_module_has_a_layer():
    graph = _graph_module()
    for module in graph.imports():
        graph.layer_of(module)  # raises KeyError naming the module otherwise


def _private_uses(source: str) -> list[str]:
    """Private names of pyro_lvm a test file reaches: ``from pyro_lvm.x import _y`` and
    ``module._y`` on a pyro_lvm module it imported."""
    import ast

    tree = ast.parse(source)
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyro_lvm"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.module}.{alias.name}")
                else:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name.split(".")[0] for a in node.names
                           if a.name.startswith("pyro_lvm"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in modules):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_tests_use_only_the_public_api():
    tests = Path(__file__).parent
    private = {p.name: _private_uses(p.read_text(encoding="utf-8"))
               for p in sorted(tests.glob("*.py"))}
    assert {name: uses for name, uses in private.items() if uses} == {}
    assert _private_uses("from pyro_lvm.models.hierarchical import _gaussian") == [
        "pyro_lvm.models.hierarchical._gaussian"]
    assert _private_uses("from pyro_lvm import datasets\ndatasets._sample_images(1)") == [
        "datasets._sample_images"]
