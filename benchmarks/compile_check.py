"""Does torch.compile (CPU, inductor) pay on pyro_lvm's pure-tensor kernels?

Two kernels, each measured in a fresh interpreter with an empty inductor cache ("cold": what
a user's first run pays) and again with the cache that run left ("warm": a later run):

- ``bound``: the log-weight reduction of ``pyro_lvm.infer.iwae``'s ``_bound`` (reproduced
  here, the library is not edited): normalized weights, logsumexp bound, STL/DReG
  coefficients, forward and backward, for lw of shape (1, K, B) = (1, 50, 128) (the digits
  IWAE(50) setting). A typical run: 200 epochs of 12 batches = 2,400 calls.
- ``pairwise``: one chunk pair of the diagonal-Normal aggregate posterior's log-density
  (``aggregate.py``): the float64 product [z^2, z, 1] @ coefficients^T of 1,024 points by
  1,024 components (d = 50) and the clamped log-sum-exp over the components; eager is the
  library's own code (a reused output buffer, in-place steps), compiled a plain version of
  the same (inductor fuses it). A typical run: 60,000 components at 2,000 points = 118
  chunk pairs (``benchmarks/aggregate_speed.py``).

Per kernel: eager ms per call; the compiled kernel's first call, compilation included (wall
time: the C++ compilers run in other processes; for ``pairwise`` the first call of each of
the run's four chunk-pair shapes, 1,024 or 976 points by 1,024 or 608 components, which
recompiles once for dynamic shapes); its later calls; the largest difference from eager;
and the number of calls after which compiling would have paid (first-call cost over
per-call saving), against the typical run. One thread; per-call times are CPU time
(``time.process_time``: the machine is shared) in 5 interleaved rounds (compiled / eager per
round: median [min-max]). If compilation fails (no C++ compiler), that is printed instead.

    .venv/bin/python benchmarks/compile_check.py [--calls 200]
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from pyro_lvm.diagnostics.aggregate import _log_sum_exp

TYPICAL = {"bound": 2400, "pairwise": 118}


def iwae_bound(lw, num_outer=1, num_particles=50, beta=None):
    """iwae.py's ``_bound``: (bound per datapoint, d bound / d lw, DReG coefficients)."""
    m, k = num_outer, num_particles
    w = (lw - lw.logsumexp(1, keepdim=True)).exp().detach()
    bound = (lw.logsumexp(1) - math.log(k)).mean(0)
    coef, dreg = w / m, w.pow(2) / m
    if beta is not None:
        bound = beta * lw.mean((0, 1)) + (1 - beta) * bound
        coef = beta / (m * k) + (1 - beta) * coef
        dreg = beta / (m * k) + (1 - beta) * dreg
    return bound, coef, dreg


def bound_step(fn, lw):
    lw = lw.detach().requires_grad_()
    bound, coef, dreg = fn(lw)
    bound.sum().backward()
    return torch.cat([bound.detach().flatten(), coef.flatten(), dreg.flatten(), lw.grad.flatten()])


def pair_block(features, coefficients):
    """One chunk pair: log-densities as one float64 product, then the clamped log-sum-exp
    (written plainly, for torch.compile to fuse)."""
    lp = features @ coefficients.T
    top = lp.amax(1, keepdim=True)
    return top.squeeze(1) + (lp - top).clamp_min(-80.0).exp().sum(1).log()


def inputs(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "bound":
        return (3 * torch.randn(1, 50, 128, generator=g),)
    z = torch.randn(1024, 50, generator=g, dtype=torch.float64)
    loc = torch.randn(1024, 50, generator=g, dtype=torch.float64)
    scale = 0.1 + torch.rand(1024, 50, generator=g, dtype=torch.float64)
    prec = scale.pow(-2)
    const = -0.5 * (loc.pow(2) * prec).sum(1) - scale.log().sum(1) - 25 * math.log(2 * math.pi)
    features = torch.cat([z.pow(2), z, torch.ones(1024, 1, dtype=torch.float64)], 1)
    return features, torch.cat([-0.5 * prec, loc * prec, const[:, None]], 1)


def measure(kind: str, calls: int) -> dict:
    """In this (fresh) interpreter: eager, compiled first call, compiled later calls."""
    torch.set_num_threads(1)
    args = inputs(kind)
    if kind == "bound":
        eager = lambda: bound_step(iwae_bound, *args)  # noqa: E731
        compiled_fn = torch.compile(iwae_bound)
        compiled = lambda: bound_step(compiled_fn, *args)  # noqa: E731
    else:
        space = torch.empty(1024 * 1024, dtype=torch.float64)

        def eager():  # as aggregate.py runs it: one reused buffer, the rest in place
            lp = torch.mm(args[0], args[1].T, out=space.view(1024, 1024))
            return _log_sum_exp(lp, in_place=True)

        compiled_fn = torch.compile(pair_block)
        compiled = lambda: compiled_fn(*args)  # noqa: E731
    reference = eager()
    t = time.perf_counter()  # wall: the C++ compilers run in other processes
    try:
        first = compiled()
        if kind == "pairwise":  # the run's other chunk-pair shapes: recompiled, dynamic
            for m, r in ((1024, 608), (976, 1024), (976, 608)):
                compiled_fn(args[0][:m], args[1][:r])
    except Exception as e:  # noqa: BLE001 (reported: e.g. no C++ compiler)
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    first_s = time.perf_counter() - t
    rounds = {"eager": [], "compiled": []}
    for r in range(5):
        for name, fn in (("eager", eager), ("compiled", compiled))[::1 if r % 2 else -1]:
            t = time.process_time()
            for _ in range(calls):
                fn()
            rounds[name].append((time.process_time() - t) / calls)
    return {"first_s": first_s, "eager_ms": statistics.median(rounds["eager"]) * 1e3,
            "compiled_ms": statistics.median(rounds["compiled"]) * 1e3,
            "ratios": [c / e for c, e in zip(rounds["compiled"], rounds["eager"], strict=True)],
            "max_diff": float((first - reference).abs().max())}


def report(kind: str, label: str, r: dict) -> None:
    if "error" in r:
        print(f"  {kind:8s} {label}: torch.compile failed: {r['error']}")
        return
    saving_ms = r["eager_ms"] - r["compiled_ms"]
    extra_s = r["first_s"] - r["eager_ms"] / 1e3
    even = f"{extra_s / saving_ms * 1e3:,.0f} calls" if saving_ms > 0 else "never (no saving)"
    typical = TYPICAL[kind]
    net = typical * saving_ms / 1e3 - extra_s
    print(f"  {kind:8s} {label}: first call {r['first_s']:.2f} s wall; eager "
          f"{r['eager_ms']:.3f} ms, compiled {r['compiled_ms']:.3f} ms per call (compiled / eager "
          f"{statistics.median(r['ratios']):.2f} [{min(r['ratios']):.2f}-"
          f"{max(r['ratios']):.2f}]); max |difference| {r['max_diff']:.1e}; pays after {even}; "
          f"over a typical run of {typical:,} calls: {'saves' if net > 0 else 'costs'} "
          f"{abs(net):.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--measure", choices=["bound", "pairwise"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.calls)))
        return
    print(f"torch {torch.__version__}, 1 thread, CPU time; each kernel in a fresh interpreter")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        for kind in ("bound", "pairwise"):
            for label in ("cold cache", "warm cache"):
                out = subprocess.run([sys.executable, __file__, "--measure", kind, "--calls",
                                      str(args.calls if kind == "bound" else 20)],
                                     capture_output=True, text=True, env=env)
                try:
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                except (IndexError, json.JSONDecodeError):
                    r = {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:200]}
                report(kind, label, r)


if __name__ == "__main__":
    main()
