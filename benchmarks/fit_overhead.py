"""Per-step cost of pyro_lvm.infer.fit against a bare pyro.infer.SVI loop (same process).

fit adds, per step: the minibatch handler (plate indices and N/B scaling), a finiteness check
of the loss and every gradient, and an in-place copy of the parameters (the last good state).
This script prints, per model, CPU ms/step (``time.process_time``: the machine is shared) and
the ratios fit / torch (issue 16's target for the digits-size VAE: at most 1.6), fit / SVI
and SVI / torch against a hand-written PyTorch loop of the same VAE (analytic KL, one
``torch.optim.Adam``), with the spread [min-max] of each ratio over the rounds.

    .venv/bin/python benchmarks/fit_overhead.py [--steps 200] [--repeats 7] [--threads 1]
"""

import argparse
import statistics
import time

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO

from pyro_lvm.infer import fit
from pyro_lvm.models import VAE


def time_fit(vae, x, steps, batch):
    t = time.process_time()
    fit(vae.model, vae.guide, x[: steps * batch], epochs=1, batch_size=batch, progress=False,
        seed=None)
    return (time.process_time() - t) / steps


def time_svi(vae, x, steps, batch):
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    perm = torch.randperm(steps * batch)
    t = time.process_time()
    for i in range(steps):
        svi.step(x[perm[i * batch:(i + 1) * batch]])
    return (time.process_time() - t) / steps


def time_torch(vae, x, steps, batch):
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    perm = torch.randperm(steps * batch)
    n = x.shape[0]
    t = time.process_time()
    for i in range(steps):
        xb = x[perm[i * batch:(i + 1) * batch]]
        loc, scale = vae.encode(xb)
        z = loc + scale * torch.randn_like(loc)
        rec = F.binary_cross_entropy_with_logits(vae.decode(z), xb, reduction="sum")
        kl = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum()
        loss = (rec + kl) * n / batch
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.process_time() - t) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = args.batch
    for name, dims in [("digits-size VAE 64-128-8", (64, 8, (128,))),
                       ("MNIST-size VAE 784-200-200-50", (784, 50, (200, 200)))]:
        data_dim, latent_dim, hidden = dims
        x = (torch.rand(args.steps * batch, data_dim) < 0.3).float()
        results = {"fit": [], "svi": [], "torch": []}
        runners = [("fit", time_fit), ("svi", time_svi), ("torch", time_torch)]
        for repeat in range(-1, args.repeats):  # repeat -1 warms up and is not counted
            # interleaved, in a rotating order, so that machine noise hits all three alike
            for key, fn in runners[repeat % 3:] + runners[:repeat % 3]:
                pyro.clear_param_store()
                torch.manual_seed(0)
                vae = VAE(data_dim, latent_dim, hidden=hidden)
                seconds = fn(vae, x, args.steps, batch)
                if repeat >= 0:
                    results[key].append(seconds)
        med = {k: statistics.median(v) * 1e3 for k, v in results.items()}

        def ratio(a, b, results=results):
            each = [p / q for p, q in zip(results[a], results[b], strict=True)]
            return f"{statistics.median(each):.2f} [{min(each):.2f}-{max(each):.2f}]"

        print(f"{name}, batch {batch}, {args.threads} thread(s): CPU ms/step "
              f"fit {med['fit']:.2f}, SVI {med['svi']:.2f}, torch {med['torch']:.2f}; "
              f"fit/torch {ratio('fit', 'torch')}, fit/SVI {ratio('fit', 'svi')}, "
              f"SVI/torch {ratio('svi', 'torch')}", flush=True)


if __name__ == "__main__":
    main()
