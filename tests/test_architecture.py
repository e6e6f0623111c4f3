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
