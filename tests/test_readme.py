"""The README's five-minute example must run as written."""

import re
from pathlib import Path

import matplotlib.pyplot as plt


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}  # one session: later blocks use earlier names
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "history.png").exists()
    plt.close("all")
