"""Per-step cost of pyro_lvm's importance-weighted objectives against hand-written PyTorch and
Pyro's RenyiELBO(alpha=0), on the 784-200-200-50 tanh Bernoulli VAE of the design notes
(batch 100, one thread).

Variants, each run for ``--steps`` steps, interleaved in a rotating order within each round:

- ``torch``: hand-written IWAE (encoder once, K reparameterized draws, logsumexp), one
  ``torch.optim.Adam`` over all parameters.
- ``torch dreg``: hand-written DReG (Tucker et al. 2019) with one backward pass: log q at
  detached parameters, and a hook that multiplies the gradient reaching z by the normalized
  weight (so the guide gets sum_k w~_k^2 d log w_k/dz dz/dphi, the model sum_k w~_k d log w_k).
- ``ours``: ``IWAE(K).loss_and_grads`` and ``FusedOptimizer(pyro.optim.Adam)``, the step
  ``pyro_lvm.infer.fit`` takes; ``ours dreg`` the same with ``estimator="dreg"``.
- ``svi``: ``pyro.infer.SVI(..., pyro.optim.Adam, IWAE(K)).step`` (Pyro's per-parameter
  optimizer wrapper), and ``renyi``: the same with ``RenyiELBO(alpha=0)``.

Prints, per K, the median CPU ms/step of each variant and the ratios ours / torch and
ours dreg / torch dreg with their spread [min-max] over rounds (ratios of the same round).
CPU time (``time.process_time``) is used because the machine is shared.

    .venv/bin/python benchmarks/iwae_speed.py [--steps 30] [--rounds 3] [--k 1 8 64]
"""

import argparse
import logging
import math
import statistics
import time

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, RenyiELBO

from pyro_lvm.infer import IWAE
from pyro_lvm.models import VAE

try:  # the fused optimizer path (absent before issue 16: the "ours" rows then use SVI)
    from pyro_lvm.infer import FusedOptimizer
except ImportError:  # pragma: no cover
    FusedOptimizer = None

BATCH = 100


def _vae():
    pyro.clear_param_store()
    torch.manual_seed(0)
    return VAE(784, 50, hidden=(200, 200))


def _timed(step, x, steps):
    step(x[:BATCH])  # warm-up: parameter creation, the pair's one-time checks
    t = time.process_time()
    for i in range(steps):
        step(x[(i + 1) * BATCH:(i + 2) * BATCH])
    return (time.process_time() - t) / steps


def svi_time(loss, x, steps):
    vae = _vae()
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss)
    return _timed(svi.step, x, steps)


def ours_time(loss, x, steps):
    if FusedOptimizer is None:
        return svi_time(loss, x, steps)
    vae = _vae()
    optim = FusedOptimizer(pyro.optim.Adam({"lr": 1e-3}))

    def step(xb):
        with pyro.poutine.trace(param_only=True) as capture:
            loss.loss_and_grads(vae.model, vae.guide, xb)
        params = {site["value"].unconstrained() for site in capture.trace.nodes.values()}
        optim(params)
        for p in params:  # as fit does
            p.grad = None

    return _timed(step, x, steps)


def torch_time(k, x, steps, dreg=False):
    vae = _vae()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    prior = torch.distributions.Normal(0.0, 1.0)

    def step(xb):
        loc, scale = vae.encode(xb)
        z = loc + scale * torch.randn(k, *loc.shape)
        log_px = -F.binary_cross_entropy_with_logits(
            vae.decode(z), xb.expand(k, -1, -1), reduction="none").sum(-1)
        q = torch.distributions.Normal(loc.detach(), scale.detach()) if dreg else \
            torch.distributions.Normal(loc, scale)
        lw = log_px + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
        if dreg:
            w = torch.softmax(lw, 0).detach()
            z.register_hook(lambda g: g * w.unsqueeze(-1))
            loss = -(w * lw).sum()
        else:
            loss = -(torch.logsumexp(lw, 0) - math.log(k)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _timed(step, x, steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("pyro").setLevel(logging.WARNING)  # RenyiELBO logs its nesting guess
    x = (torch.rand((args.steps + 2) * BATCH, 784) < 0.3).float()
    print(f"VAE 784-200-200-50, batch {BATCH}, {args.threads} thread(s), CPU ms/step: median "
          f"of {args.rounds} interleaved rounds of {args.steps} steps")
    for k in args.k:
        runners = {
            "torch": lambda k=k: torch_time(k, x, args.steps),
            "ours": lambda k=k: ours_time(IWAE(k), x, args.steps),
            "torch dreg": lambda k=k: torch_time(k, x, args.steps, dreg=True),
            "ours dreg": lambda k=k: ours_time(IWAE(k, estimator="dreg"), x, args.steps),
            "svi": lambda k=k: svi_time(IWAE(k), x, args.steps),
            "renyi": lambda k=k: svi_time(
                RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True), x, args.steps),
        }
        times = {name: [] for name in runners}
        order = list(runners)
        for r in range(args.rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                times[name].append(runners[name]())
        ms = {name: statistics.median(v) * 1e3 for name, v in times.items()}

        def ratio(a, b, times=times):
            each = [p / q for p, q in zip(times[a], times[b], strict=True)]
            return f"{statistics.median(each):.2f} [{min(each):.2f}-{max(each):.2f}]"

        print(f"K={k:3d}: " + ", ".join(f"{name} {v:.1f}" for name, v in ms.items()))
        print(f"       ours/torch {ratio('ours', 'torch')} | ours dreg/torch dreg "
              f"{ratio('ours dreg', 'torch dreg')} | svi/torch {ratio('svi', 'torch')} | "
              f"renyi/torch {ratio('renyi', 'torch')}", flush=True)


if __name__ == "__main__":
    main()
