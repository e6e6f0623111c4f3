"""Write the tutorial notebooks from their sources in this file, execute them, and save them
with their outputs (figures included).

    .venv/bin/python tutorials/build.py            # full mode: the numbers quoted in the text
    PYRO_LVM_FAST=1 .venv/bin/python tutorials/build.py --check   # fast mode, nothing saved

The notebooks are the artefact; their sources, one Python file per notebook holding its list of
(kind, source) cells, live in tutorials/src/ and keep them reviewable.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent

SETUP = """\
%matplotlib inline
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # no widgets: plain bars
warnings.filterwarnings("ignore", category=UserWarning)

import pyro
import pyro.distributions as dist
import torch

torch.set_num_threads(1)
FAST = os.environ.get("PYRO_LVM_FAST") == "1"  # the test suite runs every notebook fast
"""

SOURCES = HERE / "src"


def _cells(path: Path) -> list[tuple[str, str]]:
    """A notebook's cells from its source file; ("setup", "") stands for the SETUP cell."""
    cells = runpy.run_path(str(path))["CELLS"]
    return [("code", SETUP) if kind == "setup" else (kind, src) for kind, src in cells]


NOTEBOOKS = {f"{path.stem}.ipynb": _cells(path) for path in sorted(SOURCES.glob("*.py"))}


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md"
                else nbformat.v4.new_code_cell(src) for kind, src in cells]
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a fresh kernel of this interpreter."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(HERE)}})
    client.execute()
    return nb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="execute only, save nothing")
    parser.add_argument("names", nargs="*", help="notebooks to build (default: all)")
    args = parser.parse_args()
    for name in args.names or NOTEBOOKS:
        t = time.perf_counter()
        nb = execute(build(name, NOTEBOOKS[name]))
        if not args.check:
            nbformat.write(nb, HERE / name)
        mode = "fast" if os.environ.get("PYRO_LVM_FAST") == "1" else "full"
        print(f"{name}: {time.perf_counter() - t:.1f} s ({mode} mode)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
