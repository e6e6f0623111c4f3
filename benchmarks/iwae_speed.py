"""Per-step cost of ImportanceWeightedELBO against Pyro's RenyiELBO(alpha=0) and a
hand-written PyTorch IWAE, on the 784-200-200-50 tanh VAE of the design notes (batch 100).

Prints ms/step and the ratios ours / RenyiELBO and ours / torch for K = 1, 8, 64, and the
cost of the STL and DReG estimators relative to plain reparameterization.

    .venv/bin/python benchmarks/iwae_speed.py [--steps 30] [--repeats 5] [--threads 1]
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


def svi_step_time(loss, x, steps, batch):
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(784, 50, hidden=(200, 200))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss)
    svi.step(x[:batch])  # warm-up (parameter creation, plate-nesting guess)
    t = time.perf_counter()
    for i in range(steps):
        svi.step(x[i * batch:(i + 1) * batch])
    return (time.perf_counter() - t) / steps


def torch_step_time(k, x, steps, batch):
    torch.manual_seed(0)
    vae = VAE(784, 50, hidden=(200, 200))
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)

    def step(xb):
        loc, scale = vae.encode(xb)
        z = loc + scale * torch.randn(k, *loc.shape)
        log_px = -F.binary_cross_entropy_with_logits(
            vae.decode(z), xb.expand(k, -1, -1), reduction="none").sum(-1)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        bound = torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(k)
        loss = -bound.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(x[:batch])
    t = time.perf_counter()
    for i in range(steps):
        step(x[i * batch:(i + 1) * batch])
    return (time.perf_counter() - t) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("pyro").setLevel(logging.WARNING)  # RenyiELBO logs its nesting guess
    batch = 100
    x = (torch.rand((args.steps + 1) * batch, 784) < 0.3).float()
    print(f"VAE 784-200-200-50, batch {batch}, {args.threads} thread(s), "
          f"median of {args.repeats} interleaved repeats of {args.steps} steps")
    for k in (1, 8, 64):
        runners = {
            "ours": lambda k=k: svi_step_time(IWAE(k), x, args.steps, batch),
            "stl": lambda k=k: svi_step_time(IWAE(k, estimator="stl"), x, args.steps, batch),
            "dreg": lambda k=k: svi_step_time(IWAE(k, estimator="dreg"), x, args.steps, batch),
            "renyi": lambda k=k: svi_step_time(
                RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True), x, args.steps,
                batch),
            "torch": lambda k=k: torch_step_time(k, x, args.steps, batch),
        }
        times = {name: [] for name in runners}
        order = list(runners)
        for r in range(args.repeats):
            for name in order[r % len(order):] + order[:r % len(order)]:
                times[name].append(runners[name]())
        ms = {name: statistics.median(v) * 1e3 for name, v in times.items()}
        print(f"K={k:3d}: ms/step ours {ms['ours']:.1f}, RenyiELBO {ms['renyi']:.1f}, "
              f"torch {ms['torch']:.1f} | ours/Renyi {ms['ours'] / ms['renyi']:.2f}, "
              f"ours/torch {ms['ours'] / ms['torch']:.2f} | STL/reparam "
              f"{ms['stl'] / ms['ours']:.2f}, DReG/reparam {ms['dreg'] / ms['ours']:.2f}")


if __name__ == "__main__":
    main()
