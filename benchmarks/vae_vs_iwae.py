"""Test-set log-likelihood of a VAE trained with the ELBO against one trained with IWAE(K),
on the statically binarized 8x8 digits, same architecture, same number of steps; both
evaluated with the same importance-sampled estimator (5000 particles per test image).

Burda et al. (2016) report that IWAE training gives a better log-likelihood on MNIST; this
script measures the same comparison on the data the library ships.

    .venv/bin/python benchmarks/vae_vs_iwae.py [--epochs 300] [--k 50] [--seeds 0 1 2]
"""

import argparse
import time

import pyro
import torch

from pyro_lvm.datasets import digits
from pyro_lvm.diagnostics import information, log_likelihood
from pyro_lvm.infer import IWAE, evaluate_loss, fit
from pyro_lvm.models import VAE


def run(loss, ds, epochs, seed):
    pyro.clear_param_store()
    torch.manual_seed(seed)
    vae = VAE(64, 8, hidden=(128,))
    t = time.perf_counter()
    fit(vae.model, vae.guide, ds.train, loss=loss, optimizer=pyro.optim.Adam({"lr": 3e-3}),
        epochs=epochs, batch_size=128, seed=seed, progress=False)
    seconds = time.perf_counter() - t
    evidence = log_likelihood(vae.model, vae.guide, ds.test, num_particles=5000, seed=seed)
    elbo = -evaluate_loss(vae.model, vae.guide, ds.test, seed=seed)
    info = information(vae.model, vae.guide, ds.train, seed=seed)
    return {"log_px": float(evidence.log_px.mean()), "elbo": elbo,
            "se": float(evidence.log_px.std() / len(ds.test) ** 0.5),
            "active": info.active_units, "mi": float(info.mutual_information),
            "flagged": float(evidence.flagged.double().mean()), "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = digits(binarize="static", seed=0)
    print(f"digits 8x8 statically binarized, VAE 64-128-8 (tanh), {args.epochs} epochs, "
          f"batch 128, Adam 3e-3; test log p(x) with 5000 importance samples")
    for seed in args.seeds:
        for name, loss in (("VAE (ELBO)", pyro.infer.Trace_ELBO()),
                           (f"IWAE (K={args.k})", IWAE(args.k))):
            r = run(loss, ds, args.epochs, seed)
            print(f"seed {seed} {name:12s}: test log p(x) {r['log_px']:8.3f} +- {r['se']:.3f}, "
                  f"test ELBO {r['elbo']:8.3f}, active units {r['active']}, I_q {r['mi']:.2f}, "
                  f"k-hat > 0.7: {100 * r['flagged']:.0f}%, train {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
