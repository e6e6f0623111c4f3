"""How long `pyro-lvm --help` and `import pyro_lvm` take, against starting Python and against
importing torch.

    .venv/bin/python benchmarks/startup.py [--repeats 7]

Each command runs ``--repeats`` times, each in a fresh interpreter; printed are the median
wall time and the spread (min-max) of the runs, with the ratio of the median to a bare
``python -c pass`` and to ``import torch``. Neither ``--help`` nor ``import pyro_lvm`` may
load torch (tests/test_cli.py checks the cause; this script measures the time); the jobs
(``import pyro_lvm.runs``) load torch, Pyro, scipy and matplotlib once the arguments parse.
For what is left, ``python -X importtime -m pyro_lvm --help`` lists every module imported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import torch'": ["-c", "import torch"],
    "python -c 'import pyro_lvm'": ["-c", "import pyro_lvm"],
    "pyro-lvm --help": ["-m", "pyro_lvm", "--help"],
    "pyro-lvm fit --help": ["-m", "pyro_lvm", "fit", "--help"],
    # what `pyro-lvm fit/diagnose/demo` load before they start working: torch, Pyro, the
    # diagnostics (scipy), matplotlib and the report
    "python -c 'import pyro_lvm.runs'": ["-c", "import pyro_lvm.runs"],
}


def walls(args: list[str], repeats: int) -> list[float]:
    """Wall times (s) of ``repeats`` runs of ``python ARGS``, each in a fresh interpreter."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    times = {label: walls(args, repeats) for label, args in COMMANDS.items()}
    median = {label: statistics.median(t) for label, t in times.items()}
    bare, torch = median["python -c pass"], median["python -c 'import torch'"]
    width = max(map(len, COMMANDS))
    print(f"{'command':{width}}  median (s)  min-max (s)    x bare  x torch   ({repeats} runs)")
    for label, t in times.items():
        print(f"{label:{width}}  {median[label]:10.3f}  {min(t):5.3f}-{max(t):5.3f}  "
              f"{median[label] / bare:7.1f}  {median[label] / torch:7.2f}")


if __name__ == "__main__":
    main()
