"""pyro_lvm.diagnostics.log_likelihood against hand-written PyTorch: 5000 importance samples
per datapoint on the 179 test digits, a 64-128-8 tanh Bernoulli VAE, one thread.

Variants, interleaved in a rotating order within each round:

- ``torch P``: hand-written (encoder once, then the particles through the decoder in passes
  of P, a running logsumexp): log p(x) only, no ESS or k-hat. P = the pass that
  ``log_likelihood`` uses by default (``PAIRS_PER_PASS // 179``), and ``--torch-pass``
  others (500: the old default pass).
- ``ours``: ``log_likelihood(model, guide, x, num_particles=5000)`` (log p(x), ESS, k-hat);
  ``ours P``: the same with ``particle_chunk=P`` for each of ``--ours-pass``.

Prints the median CPU seconds (``time.process_time``, user + system: the machine is shared)
with the median system share, and ours / torch with its spread [min-max] over rounds (the
ratio within each round). ``--busy`` keeps that many extra processes spinning meanwhile
("loaded"). The mean log p(x) of both is printed as a check (they differ by Monte Carlo
error only).

    .venv/bin/python benchmarks/log_likelihood_speed.py [--rounds 5] [--busy 1]
"""

import argparse
import math
import os
import statistics
import subprocess
import sys

import torch
import torch.nn.functional as F

from pyro_lvm.datasets import digits
from pyro_lvm.diagnostics import log_likelihood
from pyro_lvm.diagnostics.evidence import PAIRS_PER_PASS
from pyro_lvm.models import VAE

S = 5000
LOG_2PI = math.log(2 * math.pi)


def hand_written(vae, x, num_particles, per_pass):
    """log p_hat(x_n) = logsumexp_s [log p(x_n | z_s) + log N(z_s; 0, I) - log q(z_s | x_n)]
    - log S, z_s = loc + scale * eps (Burda et al. 2016), in passes of ``per_pass``."""
    with torch.no_grad():
        loc, scale = vae.encode(x)
        log_det = scale.log().sum(-1)
        acc = None
        for p0 in range(0, num_particles, per_pass):
            eps = torch.randn(min(per_pass, num_particles - p0), *loc.shape)
            z = loc + scale * eps
            logits = vae.decode(z)
            log_lik = -F.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="none").sum(-1)
            lw = log_lik - 0.5 * z.pow(2).sum(-1) + 0.5 * eps.pow(2).sum(-1) + log_det
            part = lw.double().logsumexp(0)
            acc = part if acc is None else torch.logaddexp(acc, part)
        return acc - math.log(num_particles)


def cpu_times(fn):
    """(user + system, system) CPU seconds of ``fn()``."""
    t0 = os.times()
    fn()
    t1 = os.times()
    return t1.user - t0.user + t1.system - t0.system, t1.system - t0.system


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--torch-pass", type=int, nargs="*", default=[500])
    parser.add_argument("--ours-pass", type=int, nargs="*", default=[500])
    parser.add_argument("--busy", type=int, default=0, help="extra spinning processes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = digits(binarize="static", seed=0).test
    torch.manual_seed(0)
    vae = VAE(64, 8, hidden=(128,)).eval()
    default_pass = max(1, PAIRS_PER_PASS // len(x))
    runners = {f"torch {default_pass}": lambda: hand_written(vae, x, S, default_pass)}
    runners.update({f"torch {p}": (lambda p=p: hand_written(vae, x, S, p))
                    for p in args.torch_pass if p != default_pass})
    runners["ours"] = lambda: log_likelihood(vae.model, vae.guide, x, num_particles=S)
    runners.update({f"ours {p}": (lambda p=p: log_likelihood(vae.model, vae.guide, x,
                                                             num_particles=S, particle_chunk=p))
                    for p in args.ours_pass})
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    try:
        for fn in runners.values():  # warm-up: the pair's one-time checks, allocations
            fn()
        times = {name: [] for name in runners}
        order = list(runners)
        for r in range(args.rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                times[name].append(cpu_times(runners[name]))
    finally:
        for p in busy:
            p.kill()
            p.wait()
    print(f"log p(x) of {len(x)} test digits, S = {S}, VAE 64-128-8, 1 thread, "
          f"{args.busy} busy process(es); CPU s, median of {args.rounds} interleaved rounds")
    for name, t in times.items():
        print(f"  {name:10s} {statistics.median(c for c, _ in t):.3f} s "
              f"(system {statistics.median(s for _, s in t):.3f} s)")

    def ratio(a, b):
        each = [p[0] / q[0] for p, q in zip(times[a], times[b], strict=True)]
        return f"{statistics.median(each):.2f} [{min(each):.2f}-{max(each):.2f}]"

    torches = [n for n in runners if n.startswith("torch")]
    for ours in [n for n in runners if n.startswith("ours")]:
        print(f"  {ours:10s} / " + ", ".join(f"{t}: {ratio(ours, t)}" for t in torches))
    torch.manual_seed(1)
    ref = hand_written(vae, x, S, default_pass)
    got = log_likelihood(vae.model, vae.guide, x, num_particles=S, seed=1).log_px
    print(f"  mean log p(x): ours {float(got.mean()):.4f}, torch {float(ref.mean()):.4f}, "
          f"max |difference| per digit {float((got - ref).abs().max()):.1e} (same seed, same "
          f"passes: the same draws)")


if __name__ == "__main__":
    main()
