"""How long `pyro-lvm --help` takes, against starting Python and against importing torch.

    .venv/bin/python benchmarks/startup.py [--repeats 5]

Each command runs in a fresh interpreter; the median wall time of ``--repeats`` runs is
printed, with the ratio of ``--help`` to a bare ``python -c pass`` and to ``import torch``
(the help must not load torch).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    bare = wall([sys.executable, "-c", "pass"], repeats)
    torch = wall([sys.executable, "-c", "import torch"], repeats)
    help_ = wall([sys.executable, "-m", "pyro_lvm", "--help"], repeats)
    fit_help = wall([sys.executable, "-m", "pyro_lvm", "fit", "--help"], repeats)
    print(f"python -c pass          {bare:6.3f} s")
    print(f"python -c 'import torch' {torch:6.3f} s")
    print(f"pyro-lvm --help         {help_:6.3f} s  ({help_ / bare:.1f}x bare python, "
          f"{help_ / torch:.2f}x import torch)")
    print(f"pyro-lvm fit --help     {fit_help:6.3f} s")


if __name__ == "__main__":
    main()
