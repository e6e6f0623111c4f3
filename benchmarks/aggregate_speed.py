"""Aggregate-posterior density: the diagonal-Normal fast path (pairwise log-densities as
matrix products) against plain broadcasting of Normal.log_prob, in the same process.

Evaluates log q(z) = logsumexp_n log q(z | x_n) - log N at M points for N components in
d dimensions (default N = M = 10,000, d = 50), both streamed in the same chunks, checks that
they agree, prints the times and the ratio (target: at least 10x), and the peak resident
memory of a 60,000-component, 50-dimensional mixture evaluated at 2,000 points, measured in
a fresh interpreter (``ru_maxrss`` only ever rises: in this process it would report the
broadcasting baseline's peak, not the evaluation's).

    .venv/bin/python benchmarks/aggregate_speed.py [--n 10000] [--dim 50] [--threads 1]
"""

import argparse
import math
import resource
import subprocess
import sys
import time

import pyro.distributions as dist
import torch

from pyro_lvm.diagnostics.aggregate import DiagonalNormalAggregatePosterior, SiteBlock


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_only:
        memory_only(args.chunk)
        return
    g = torch.Generator().manual_seed(0)
    q = mixture(args.n, args.dim, g)
    z = q.sample(args.n, generator=g)

    t = time.perf_counter()
    fast = q.log_prob(z, chunk_size=args.chunk)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    slow = broadcast_log_prob(z, q.loc, q.scale, args.chunk)
    t_slow = time.perf_counter() - t
    err = float((fast - slow).abs().max())
    print(f"N = M = {args.n}, d = {args.dim}, chunks of {args.chunk}, {args.threads} thread(s)")
    print(f"fast path {t_fast:.2f} s, broadcasting {t_slow:.2f} s, "
          f"ratio {t_slow / t_fast:.1f}x, max |difference| {err:.2e}")

    print(subprocess.run([sys.executable, __file__, "--memory-only", "--chunk", str(args.chunk),
                          "--threads", str(args.threads)], check=True, capture_output=True,
                         text=True).stdout.strip())


def current_rss_mib() -> float:
    """The resident memory now (Linux: /proc/self/statm), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def memory_only(chunk: int) -> None:
    """The 60,000-component evaluation alone: RSS after building the mixture, and the peak."""
    g = torch.Generator().manual_seed(1)
    big = mixture(60_000, 50, g)
    points = big.sample(2000, generator=g)
    before = current_rss_mib()
    t = time.perf_counter()
    big.log_prob(points, chunk_size=chunk)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"N = 60,000, d = 50, 2,000 points (fresh process): {time.perf_counter() - t:.2f} s, "
          f"peak RSS {peak:.0f} MiB, {peak - before:.0f} MiB above the RSS just before "
          f"({before:.0f} MiB)")


if __name__ == "__main__":
    main()
