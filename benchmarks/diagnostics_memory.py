"""Peak memory and time of :func:`bayes_loop` and :func:`information` against N, latent dim 512.

    .venv/bin/python benchmarks/diagnostics_memory.py [--sizes 2000 4000 8000] [--dim 512]
        [--diagnostics bayes_loop information] [--threads 1] [--chunk-size N]
        [--max-points 500]

Each (diagnostic, N) runs in a fresh interpreter. The child builds the pair and the data, then
resets the peak resident set size (``echo 5 > /proc/self/clear_refs``, Linux) and reads the
peak (``VmHWM`` in ``/proc/self/status``) after the diagnostic: that peak is the diagnostic's
own, with the baseline (interpreter, torch, the pair and its data) printed beside it.

The pair is linear-Gaussian with a diagonal exact posterior, cheap to run at any N:
z ~ N(0, I_d), x = a z + sigma eps (x has d coordinates too), q(z | x) the exact posterior
N(a x / (a^2 + sigma^2), sigma^2 / (a^2 + sigma^2)) per coordinate. With d = 512 it shows the
growth issue 17 reported: bayes_loop held its (L, N, d) posterior draws at once, and
information's per-coordinate marginals an (points, components, d) block of 512 x 1024 x 512.
information evaluates ``--max-points`` points (default 500; 0: all N) while its q(z) mixes all
N components: its time grows like points x N x d, about 2 minutes at N = 2000 with every
point on one thread, and the memory it held did not depend on the number of points.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

A, SIGMA = 1.0, 0.7


def peak_mib() -> float:
    """VmHWM of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def reset_peak() -> None:
    """Reset VmHWM to the current resident set size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(diagnostic: str, n: int, dim: int, threads: int, chunk_size: int | None,
          max_points: int | None) -> dict:
    import pyro
    import pyro.distributions as dist
    import torch

    from pyro_lvm.diagnostics import bayes_loop, information

    torch.set_num_threads(threads)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(A * z, SIGMA).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(A * x / (A**2 + SIGMA**2),
                                         SIGMA / (A**2 + SIGMA**2) ** 0.5).to_event(1))

    g = torch.Generator().manual_seed(0)
    x = A * torch.randn(n, dim, generator=g) + SIGMA * torch.randn(n, dim, generator=g)
    kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
    reset_peak()
    base = peak_mib()
    start = time.perf_counter()
    if diagnostic == "bayes_loop":
        result = bayes_loop(model, guide, x, **kwargs)
        summary = {"p_value": result.p_value, "passed": bool(result.passed)}
    else:
        result = information(model, guide, x, max_points=max_points, **kwargs)
        summary = {"rate": float(result.rate), "mi": float(result.mutual_information),
                   "marginal_kl": float(result.marginal_kl)}
    return {"diagnostic": diagnostic, "n": n, "baseline_mib": base, "peak_mib": peak_mib(),
            "seconds": time.perf_counter() - start, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--diagnostics", nargs="+", default=["bayes_loop", "information"],
                        choices=["bayes_loop", "information"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--max-points", type=int, default=500)
    parser.add_argument("--child", nargs=2, metavar=("DIAGNOSTIC", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out = child(args.child[0], int(args.child[1]), args.dim, args.threads, args.chunk_size,
                    args.max_points or None)
        print(json.dumps(out))
        return
    print(f"{'diagnostic':<12} {'N':>6} {'baseline MiB':>13} {'peak MiB':>9} {'seconds':>8}")
    for diagnostic in args.diagnostics:
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--child", diagnostic, str(n), "--dim",
                   str(args.dim), "--threads", str(args.threads), "--max-points",
                   str(args.max_points)]
            if args.chunk_size is not None:
                cmd += ["--chunk-size", str(args.chunk_size)]
            run = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if run.returncode != 0:
                print(f"{diagnostic:<12} {n:>6} failed:\n{run.stderr[-2000:]}")
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            extra = {k: v for k, v in r.items()
                     if k not in ("diagnostic", "n", "baseline_mib", "peak_mib", "seconds")}
            print(f"{diagnostic:<12} {n:>6} {r['baseline_mib']:>13.0f} {r['peak_mib']:>9.0f} "
                  f"{r['seconds']:>8.1f}  {extra}", flush=True)


if __name__ == "__main__":
    main()
