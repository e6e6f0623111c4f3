"""What safe vectorization costs: the one-time check that a model/guide pair broadcasts over a
leading particle dimension, and the sequential (one particle at a time) fallback against the
vectorized path, on the 784-200-200-50 tanh VAE of the design notes (batch 100).

Prints, as ratios measured in this process (medians of interleaved repeats):
- the check (``pair_info`` on an empty cache) in units of one vectorized IWAE(K) step;
- an IWAE(K) ``loss_and_grads`` step with ``vectorize=False`` over ``vectorize=True``;
- ``log_likelihood`` (S particles, 100 points) sequential over vectorized.

    .venv/bin/python benchmarks/vectorize_check.py [--repeats 5] [--threads 1]
"""

import argparse
import statistics
import time
import warnings

import pyro
import torch

from pyro_lvm.diagnostics import log_likelihood
from pyro_lvm.handlers import minibatch
from pyro_lvm.infer import IWAE, particles
from pyro_lvm.models import VAE


def timed(fn, reps=1):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(784, 50, hidden=(200, 200))
    x = (torch.rand(100, 784) < 0.3).float()
    idx = torch.arange(100)
    print(f"VAE 784-200-200-50, batch 100, {args.threads} thread(s), median of "
          f"{args.repeats} interleaved repeats")

    def check():
        particles._CACHE.clear()
        with minibatch(idx, 100):
            particles.pair_info(vae.model, vae.guide, (x,), vectorize="auto")

    for k in (8, 64):  # one particle is always drawn without a particle plate
        losses = {v: IWAE(k, vectorize=v) for v in (True, False)}
        for loss in losses.values():
            loss.loss_and_grads(vae.model, vae.guide, x)  # warm-up, verdict cached
        runs = {
            "check": check,
            "vectorized": lambda ls=losses: ls[True].loss_and_grads(vae.model, vae.guide, x),
            "sequential": lambda ls=losses: ls[False].loss_and_grads(vae.model, vae.guide, x),
        }
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn, args.steps if name != "check" else 1))
        ms = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        print(f"IWAE K={k:3d}: vectorized step {ms['vectorized']:.1f} ms, sequential "
              f"{ms['sequential']:.1f} ms (x{ms['sequential'] / ms['vectorized']:.2f}); "
              f"check {ms['check']:.1f} ms = {ms['check'] / ms['vectorized']:.2f} vectorized "
              "steps, once per pair and row shape")
    for s in (100, 1000):
        t = {v: [] for v in (True, False)}
        for _ in range(max(1, args.repeats // 2)):
            for v in (True, False):
                t[v].append(timed(lambda v=v, s=s: log_likelihood(
                    vae.model, vae.guide, x, num_particles=s, vectorize=v)))
        vec, seq = statistics.median(t[True]), statistics.median(t[False])
        print(f"log_likelihood S={s}: vectorized {vec * 1e3:.0f} ms, sequential "
              f"{seq * 1e3:.0f} ms (x{seq / vec:.1f})")


if __name__ == "__main__":
    main()
