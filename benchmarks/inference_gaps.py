"""The inference gaps of the demo's VAE on the binarized digits (Cremer et al. 2018's table,
for pyro_lvm's demo model).

    .venv/bin/python benchmarks/inference_gaps.py [--epochs 200] [--rows 300] [--steps 400]

Trains the demo's VAE (``recipes.fit_vae`` with the demo's settings), then, with its decoder
frozen, trains a full-covariance encoder and a flow encoder (``AmortizedMultivariateNormal``,
``AmortizedFlow``) for ``--guide-epochs`` each, and prints ``inference_gaps`` of the VAE's own
encoder against each richer family on ``--rows`` test rows: how much of the bound's gap is
the family (approximation) and how much the encoder (amortization), and how much a richer
family closes.
"""

from __future__ import annotations

import argparse
import time

import pyro
import pyro.optim
import pyro.poutine as poutine
import torch

from pyro_lvm import datasets
from pyro_lvm.diagnostics import inference_gaps
from pyro_lvm.guides import AmortizedFlow, AmortizedMultivariateNormal
from pyro_lvm.infer import fit
from pyro_lvm.recipes import fit_vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--guide-epochs", type=int, default=100)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--particles", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = datasets.digits(binarize="static", seed=0)
    t0 = time.perf_counter()
    vae = fit_vae(ds, epochs=args.epochs, progress=False)["vae"]
    print(f"VAE trained ({args.epochs} epochs, {time.perf_counter() - t0:.0f} s)")
    frozen = poutine.block(vae.model, hide_types=["param"])  # train only the guides below
    rows = ds.test[: args.rows]
    for name, richer in (("full-covariance Normal", AmortizedMultivariateNormal(
            frozen, hidden=(128,))), ("flow (2 affine autoregressive)", AmortizedFlow(
            frozen, hidden=(128,)))):
        pyro.set_rng_seed(0)
        t0 = time.perf_counter()
        fit(frozen, richer, ds.train, optimizer=pyro.optim.Adam({"lr": 3e-3}),
            epochs=args.guide_epochs, batch_size=128, progress=False)
        gaps = inference_gaps(vae.model, vae.guide, rows, steps=args.steps,
                              num_particles=args.particles, richer=richer)
        print(f"\n--- richer family: {name} ({time.perf_counter() - t0:.0f} s)")
        print(gaps.summary())


if __name__ == "__main__":
    main()
