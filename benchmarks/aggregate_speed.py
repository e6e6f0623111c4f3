"""Aggregate-posterior density: the diagonal-Normal fast path (pairwise log-densities as
matrix products) against plain broadcasting of Normal.log_prob, and against the float64
matrix products alone, in the same process; its peak memory in a fresh interpreter.

1. N = M = ``--n`` (default 10,000), d = 50: the fast path against broadcasting
   ``Normal.log_prob`` over (points, components, d), both streamed in the same chunks
   (target: at least 10x), and their largest difference.
2. N = 60,000 components, d = 50, 2,000 points (the issue's case): the fast path
   (``log_prob``) against the float64 matrix products alone that its expanded quadratic
   form needs ([z^2, z, 1] @ [-1/(2 s^2), m/s^2, c]^T per chunk pair, operands prepared
   beforehand): the "float64 matmul bound" (target: at most 2x). The two are interleaved
   over ``--rounds`` rounds; CPU time (``time.process_time``, the machine is shared) and
   wall time, medians, and the ratio's spread [min-max] over rounds. Accuracy: against
   ``Normal.log_prob`` broadcast in float64 at the first 200 points.
3. The 60,000-component evaluation in a fresh interpreter: its peak resident memory
   (VmHWM, reset through /proc/self/clear_refs just before the call) above the resident
   memory just before. Not ``ru_maxrss``: Linux keeps it across fork and execve, so a child
   started from this process reports this process's own peak (that was the "432 MiB").

    .venv/bin/python benchmarks/aggregate_speed.py [--n 10000] [--rounds 5] [--chunk 1024]
"""

import argparse
import math
import statistics
import subprocess
import sys
import time

import pyro.distributions as dist
import torch

from pyro_lvm.diagnostics.aggregate import (
    DiagonalNormalAggregatePosterior,
    SiteBlock,
    _diag_normal_coefficients,
    _diag_normal_features,
)


def broadcast_log_prob(z, loc, scale, chunk):
    out = []
    for a in range(0, len(z), chunk):
        acc = torch.full((len(z[a:a + chunk]),), -math.inf, dtype=z.dtype)
        for b in range(0, len(loc), chunk):
            lp = dist.Normal(loc[b:b + chunk], scale[b:b + chunk]).log_prob(
                z[a:a + chunk, None, :]).sum(-1)
            acc = torch.logaddexp(acc, lp.logsumexp(1))
        out.append(acc)
    return torch.cat(out) - math.log(len(loc))


def mixture(n, d, g):
    loc = torch.randn(n, d, generator=g)
    scale = 0.1 + torch.rand(n, d, generator=g)
    return DiagonalNormalAggregatePosterior([SiteBlock("z", (d,), 0, d)], n, loc=loc, scale=scale)


def matmul_bound(points, components, chunk):
    """The float64 products alone, chunk pair by chunk pair (operands prepared)."""
    for a in range(0, len(points), chunk):
        for b in range(0, len(components), chunk):
            points[a:a + chunk] @ components[b:b + chunk].T


def timed(fn):
    """(CPU seconds, wall seconds) of ``fn()``."""
    t, w = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - t, time.perf_counter() - w


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_only:
        memory_only(args.chunk)
        return
    g = torch.Generator().manual_seed(0)
    q = mixture(args.n, args.dim, g)
    z = q.sample(args.n, generator=g)
    t_fast = timed(lambda: q.log_prob(z, chunk_size=args.chunk))[0]
    t_slow = timed(lambda: broadcast_log_prob(z, q.loc, q.scale, args.chunk))[0]
    err = float((q.log_prob(z, chunk_size=args.chunk)
                 - broadcast_log_prob(z, q.loc, q.scale, args.chunk)).abs().max())
    print(f"1. N = M = {args.n}, d = {args.dim}, chunks of {args.chunk}, 1 thread: fast path "
          f"{t_fast:.2f} s, broadcasting {t_slow:.2f} s (CPU), ratio {t_slow / t_fast:.1f}x, "
          f"max |difference| {err:.2e} (float32 reference)")

    g = torch.Generator().manual_seed(1)
    big = mixture(60_000, 50, g)
    points = big.sample(2000, generator=g)
    features = _diag_normal_features(points)
    coefficients = _diag_normal_coefficients(big.loc, big.scale)
    runs = {"fast": lambda: big.log_prob(points, chunk_size=args.chunk),
            "bound": lambda: matmul_bound(features, coefficients, args.chunk)}
    times = {name: [] for name in runs}
    for r in range(args.rounds):
        for name in list(runs)[r % 2:] + list(runs)[:r % 2]:
            times[name].append(timed(runs[name]))
    cpu = [f[0] / b[0] for f, b in zip(times["fast"], times["bound"], strict=True)]
    wall = [f[1] / b[1] for f, b in zip(times["fast"], times["bound"], strict=True)]

    def med(name, i):
        return statistics.median(t[i] for t in times[name])

    print(f"2. N = 60,000, d = 50, 2,000 points, {args.rounds} interleaved rounds: fast path "
          f"{med('fast', 0):.3f} s CPU ({med('fast', 1):.3f} s wall), float64 matmul bound "
          f"{med('bound', 0):.3f} s CPU ({med('bound', 1):.3f} s wall); fast / bound "
          f"{statistics.median(cpu):.2f}x [{min(cpu):.2f}-{max(cpu):.2f}] CPU, "
          f"{statistics.median(wall):.2f}x [{min(wall):.2f}-{max(wall):.2f}] wall")
    got = big.log_prob(points[:200], chunk_size=args.chunk).double()
    ref = broadcast_log_prob(points[:200].double(), big.loc.double(), big.scale.double(),
                             args.chunk)
    print(f"   accuracy at 200 points against Normal.log_prob broadcast in float64: max "
          f"|difference| {float((got - ref).abs().max()):.2e} nats, max relative "
          f"{float(((got - ref) / ref).abs().max()):.2e}")

    print(subprocess.run([sys.executable, __file__, "--memory-only", "--chunk", str(args.chunk)],
                         check=True, capture_output=True, text=True).stdout.strip())


def status_mib(field: str) -> float:
    """A field of /proc/self/status (VmRSS, VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def memory_only(chunk: int) -> None:
    """The 60,000-component evaluation alone: its peak resident memory above that before it."""
    g = torch.Generator().manual_seed(1)
    big = mixture(60_000, 50, g)
    points = big.sample(2000, generator=g)
    big.log_prob(points[:10], chunk_size=chunk)  # warm-up: lazy initialisation of kernels
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident memory
    before = status_mib("VmRSS")
    t = time.process_time()
    big.log_prob(points, chunk_size=chunk)
    seconds = time.process_time() - t
    peak = status_mib("VmHWM")
    print(f"3. N = 60,000, d = 50, 2,000 points (fresh process): {seconds:.2f} s CPU, peak RSS "
          f"{peak:.0f} MiB, {peak - before:.0f} MiB above the RSS just before ({before:.0f} MiB)"
          f"; a chunk pair's float64 matrix is {chunk * chunk * 8 / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
