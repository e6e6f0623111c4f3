"""Every tutorial notebook runs top to bottom in fast mode, and what is saved is what
tutorials/build.py writes (with figures in the saved outputs)."""

from pathlib import Path

import nbformat
import pytest
from fixtures import load_script

TUTORIALS = Path(__file__).parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def _builder():
    return load_script(TUTORIALS / "build.py")


def test_every_notebook_has_a_source():
    assert NOTEBOOKS, "no tutorial notebooks"
    assert {p.name for p in NOTEBOOKS} == set(_builder().NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, monkeypatch):
    monkeypatch.setenv("PYRO_LVM_FAST", "1")  # inherited by the kernel
    build = _builder()
    saved = nbformat.read(path, as_version=4)
    fresh = build.build(path.name, build.NOTEBOOKS[path.name])
    assert [c.source for c in saved.cells] == [c.source for c in fresh.cells], (
        "the saved notebook differs from tutorials/build.py: run `make tutorials`")
    figures = sum("image/png" in o.get("data", {}) for c in saved.cells
                  if c.cell_type == "code" for o in c.outputs)
    assert figures >= 1, "the saved notebook has no figures: run `make tutorials`"
    build.execute(fresh)  # raises CellExecutionError on any failing cell
    errors = [o for c in fresh.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
