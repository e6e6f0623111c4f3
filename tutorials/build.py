"""Write the tutorial notebooks from their sources in this file, execute them, and save them
with their outputs (figures included).

    .venv/bin/python tutorials/build.py            # full mode: the numbers quoted in the text
    PYRO_LVM_FAST=1 .venv/bin/python tutorials/build.py --check   # fast mode, nothing saved

The notebooks are the artefact; this script keeps their source reviewable as Python.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent

SETUP = """\
%matplotlib inline
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # no widgets: plain bars
warnings.filterwarnings("ignore", category=UserWarning)

import pyro
import pyro.distributions as dist
import torch

torch.set_num_threads(1)
FAST = os.environ.get("PYRO_LVM_FAST") == "1"  # the test suite runs every notebook fast
"""

BAYES_LOOP = [
    ("md", """\
# 03 · Bayes' loop: the self-consistency check that catches bugs in inference code

**Claim** (Lange, *Common misconceptions about hierarchical generative models*; Talts et al.
2018): draw z from the prior r(z), x from p(x | z), and infer q(z | x). If inference is
right, the average of all those posteriors is the prior — and, sharper, the rank of each true
z among draws from its posterior is uniform (simulation-based calibration, SBC). Any bug in
the inference code shows up as a mismatch; so does an approximate family that cannot
represent the posterior, which is *not* a bug."""),
    ("code", SETUP),
    ("md", """\
## A correct pair passes

Probabilistic PCA has an exact posterior. `bayes_loop` simulates one data set of the shape
it is given, draws 99 posterior samples per simulated point, and tests the ranks
(chi-square and KS per latent coordinate) and the average posterior against fresh prior
draws (an energy-distance permutation test), Bonferroni-combined."""),
    ("code", """\
import math

from pyro_lvm.diagnostics import bayes_loop, prior_gap
from pyro_lvm.models import PPCA

torch.manual_seed(0)
ppca = PPCA(5, 2)
with torch.no_grad():
    ppca.decoder.weight.normal_()
    ppca.decoder.log_noise_variance.fill_(math.log(0.5))
    ppca.decoder.loc.copy_(3 * torch.randn(5))
shape = torch.zeros(300 if FAST else 1000, 5)  # only the shape matters

correct = bayes_loop(ppca.model, ppca.exact_posterior, shape)
print(correct.summary())
correct.plot()"""),
    ("md", """\
## Planted bugs are caught

The same exact posterior with one bug at a time: the posterior scale halved or doubled, the
mean shifted by half a posterior standard deviation, and the classic centering bug — an
encoder that forgets to subtract the model's offset mu."""),
    ("code", """\
def planted(bug):
    def guide(x):
        post = ppca.posterior(x)
        mean, tril = post.loc, post.scale_tril
        if bug == "scale x 0.5":
            tril = 0.5 * tril
        elif bug == "scale x 2":
            tril = 2.0 * tril
        elif bug == "mean + sd/2":
            mean = mean + 0.5 * post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
        elif bug == "forgot mu":
            w, s2 = ppca.weight, ppca.noise_variance
            mean = torch.linalg.solve(w.T @ w + s2 * torch.eye(2), w.T @ x.T).T
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean, scale_tril=tril))
    return guide

results = {bug: bayes_loop(ppca.model, planted(bug), shape)
           for bug in ["scale x 0.5", "scale x 2", "mean + sd/2", "forgot mu"]}
for bug, r in results.items():
    print(f"{bug:12s} passed={r.passed!s:5s} p={r.p_value:.2e}  {r.worst()}")
results["scale x 0.5"].plot()"""),
    ("md", """\
Halving the scale makes the true z fall in the tails of its posterior: the rank histograms
are U-shaped. Doubling it piles the ranks in the middle; a shifted mean tilts them.

## An approximate family fails too — without any bug

A mean-field Gaussian guide on a PPCA whose posterior is strongly correlated (two nearly
parallel loading vectors), with the best mean-field variances 1 / diag(precision): every
calculation is right, yet the loop fails, because the family cannot hold the posterior.
The result says by how much (the variance ratio q/r below 1) and why it can happen."""),
    ("code", """\
torch.manual_seed(1)
corr = PPCA(5, 2)
with torch.no_grad():
    w = torch.randn(5, 2)
    w[:, 1] = w[:, 0] + 0.3 * torch.randn(5)
    corr.decoder.weight.copy_(w)
    corr.decoder.log_noise_variance.fill_(math.log(0.5))

def mean_field(x):
    post = corr.posterior(x)
    precision = torch.linalg.inv(post.covariance_matrix[0])
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(post.loc, precision.diagonal().rsqrt()).to_event(1))

mf = bayes_loop(corr.model, mean_field, shape)
print(mf.summary())
print("variance ratio q/r per coordinate:", mf.variance_ratio.round(3))
mf.plot()"""),
    ("md", """\
## On real data the same comparison measures the misfit

On data the model did not generate, the average posterior q(z) need not equal the prior: the
gap KL(q(z) || r(z)) (the texts' eta) measures how far the model is from the data. PPCA on
data from its own distribution has no gap; fitted to two clusters it has one."""),
    ("code", """\
good = prior_gap(ppca.model, ppca.exact_posterior, ppca.sample(1000))
torch.manual_seed(0)
clusters = torch.cat([torch.randn(500, 5) * 0.3 + 2, torch.randn(500, 5) * 0.3 - 2])
misfit = PPCA(5, 2).fit_closed_form(clusters)
bad = prior_gap(misfit.model, misfit.exact_posterior, clusters)
print(f"own data:     KL(q(z)||r(z)) = {good.kl}, energy test p = {good.two_sample.p_value:.3f}")
print(f"two clusters: KL(q(z)||r(z)) = {bad.kl}, energy test p = {bad.two_sample.p_value:.3f}")"""),
]

PPCA_GAPS = [
    ("md", """\
# 01 · PPCA: classical VI, amortized VI, and the two gaps

**Claims** (the variational-methods text; Cremer et al. 2018): the ELBO is a lower bound on
log p(x), tight exactly when q(z|x) is the posterior. Classical VI optimizes one q per
datapoint; a VAE's encoder *amortizes* that optimization into one network. The distance from
log p(x) to the ELBO splits into an **approximation gap** (the best q in the family is not the
posterior) and an **amortization gap** (the encoder does not find that best q for every x).
Probabilistic PCA is the model where every one of these quantities is known."""),
    ("code", SETUP),
    ("md", """\
## PPCA in closed form

Tipping & Bishop's maximum-likelihood solution: W from the top eigenvectors of the sample
covariance, sigma^2 the mean of the discarded eigenvalues. scikit-learn's PCA computes the same
model's likelihood (with a 1/(N-1) covariance)."""),
    ("code", """\
import math

from sklearn.decomposition import PCA

from pyro_lvm.datasets import digits
from pyro_lvm.diagnostics import log_likelihood
from pyro_lvm.guides import AmortizedNormal, PerDatapointNormal
from pyro_lvm.infer import evaluate_loss, fit
from pyro_lvm.models import PPCA

ds = digits(seed=0)
x = ds.train[: 300 if FAST else 1438].double()
ppca = PPCA(64, 5).double().fit_closed_form(x)
exact = ppca.log_likelihood(x).mean().item()
print(f"closed-form ML: log p(x) = {exact:.4f} nats per datapoint "
      f"(scikit-learn: {PCA(5).fit(x.numpy()).score(x.numpy()):.4f})")

# W is identified only up to a rotation: W R has the same likelihood. At Tipping & Bishop's
# solution the posterior is diagonal; after a rotation it is correlated.
torch.manual_seed(0)
rotation = torch.linalg.qr(torch.randn(5, 5, dtype=torch.double))[0]
with torch.no_grad():
    ppca.set_parameters(ppca.loc, ppca.weight @ rotation, ppca.noise_variance)
print(f"after rotating W: log p(x) = {ppca.log_likelihood(x).mean().item():.4f}")"""),
    ("md", """\
## The family's best: approximation gap in closed form

For a mean-field Gaussian q, the best member (minimum KL(q || p)) has the exact posterior's
mean and variances 1 / diag(precision). Its gap to log p(x) is KL(q* || p(z|x)), which we can
compute exactly, with the model fixed at the (rotated) ML solution. With the exact posterior
(a full covariance), the ELBO equals log p(x) on every draw. (Without the rotation the
posterior would be diagonal and the gap zero: how far mean-field falls short depends on a
choice that does not change the likelihood at all.)"""),
    ("code", """\
import pyro.poutine as poutine

frozen = poutine.block(ppca.model, hide_types=["param"])  # fit only the guides below
post = ppca.posterior(x)
precision = torch.linalg.inv(post.covariance_matrix[0])
best_mf = dist.Normal(post.loc, precision.diagonal().rsqrt()).to_event(1)
full = dist.MultivariateNormal(post.loc, scale_tril=post.scale_tril)
approximation_gap = torch.distributions.kl_divergence(best_mf, full).mean().item()
exact_elbo = -evaluate_loss(ppca.model, ppca.exact_posterior, x)
print(f"ELBO with the exact posterior: {exact_elbo:.4f} (= log p(x) {exact:.4f})")
print(f"approximation gap of the best mean-field q: {approximation_gap:.4f} nats")"""),
    ("md", """\
## Classical VI finds the family's best; an encoder pays the amortization gap

`PerDatapointNormal` keeps a mean and scale per training point (classical VI);
`AmortizedNormal` is an MLP encoder shared by all points. Both are mean-field, both are
fitted to the same, frozen model by maximizing the ELBO."""),
    ("code", """\
steps = 100 if FAST else 1500
pyro.set_rng_seed(0)
classical = PerDatapointNormal(frozen, num_data=len(x))  # every point updated every step
h_classical = fit(frozen, classical, x, epochs=steps, batch_size=None, progress=False,
                  optimizer=pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.01 ** (1 / steps)}))
amortized = AmortizedNormal(frozen, hidden=(64,))
h_amortized = fit(frozen, amortized, x, epochs=steps, batch_size=None, progress=False,
                  optimizer=pyro.optim.ClippedAdam({"lr": 0.01, "lrd": 0.01 ** (1 / steps)}))
# the ELBO averaged over 64 draws per point, so that Monte Carlo noise is below the gaps
many = pyro.infer.Trace_ELBO(num_particles=64, vectorize_particles=True, max_plate_nesting=1)
elbo_classical = -evaluate_loss(frozen, classical, x, loss=many)
elbo_amortized = -evaluate_loss(frozen, amortized, x, loss=many)
print(f"log p(x)                      {exact:9.4f}")
print(f"ELBO, classical VI            {elbo_classical:9.4f}   "
      f"gap {exact - elbo_classical:.4f} (approximation gap {approximation_gap:.4f})")
print(f"ELBO, amortized encoder       {elbo_amortized:9.4f}   "
      f"amortization gap {elbo_classical - elbo_amortized:.4f}")"""),
    ("code", """\
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(h_classical.epoch, [-v for v in h_classical.train_loss], label="classical VI")
ax.plot(h_amortized.epoch, [-v for v in h_amortized.train_loss], label="amortized encoder")
ax.axhline(exact, color="k", ls="--", lw=1, label="log p(x)")
ax.axhline(exact - approximation_gap, color="grey", ls=":", lw=1,
           label="best mean-field ELBO")
ax.set_ylim(exact - 0.4, exact + 0.05)  # the gaps are tenths of a nat
ax.set_xlabel("step (full batch)")
ax.set_ylabel("ELBO per datapoint (nats)")
ax.legend(fontsize=8)
plt.show()"""),
    ("md", """\
The ELBO never crosses log p(x). Classical VI climbs to the best mean-field ELBO, one
approximation gap below log p(x); the encoder stays below that by the amortization gap.
Importance sampling with the same encoder closes most of the distance: its estimate of
log p(x) lies between the ELBO and the exact value."""),
    ("code", """\
ev = log_likelihood(frozen, amortized, x[:100], num_particles=200 if FAST else 2000)
print(f"importance-sampled log p(x) with the encoder: {ev.log_px.mean():.4f} "
      f"(exact {ppca.log_likelihood(x[:100]).mean():.4f}, "
      f"ELBO {-evaluate_loss(frozen, amortized, x[:100], loss=many):.4f})")"""),
]

YOUR_OWN = [
    ("md", """\
# 06 · Your own model: write it, fit it, check it

**Claim**: the diagnostics need nothing but the contract — a `model(x)` and a `guide(x)`
written as Pyro programs, with the local latents inside `pyro.plate("data", len(x))` and the
observations given with `obs=x`. Here: factor analysis (PPCA with one noise level per
dimension), written from scratch, with a hand-written amortized guide; its exact
log-likelihood is known, so every estimate can be checked."""),
    ("code", SETUP),
    ("code", """\
from torch import nn
from torch.distributions import constraints

D, d = 8, 2

def model(x):
    loading = pyro.param("loading", lambda: 0.1 * torch.randn(D, d))
    offset = pyro.param("offset", lambda: torch.zeros(D))
    noise = pyro.param("noise", lambda: torch.ones(D), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(offset + z @ loading.T, noise).to_event(1), obs=x)

encoder = nn.Linear(D, 2 * d)

def guide(x):
    pyro.module("encoder", encoder)
    loc, raw = encoder(x).chunk(2, dim=-1)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

# data from a known factor-analysis model
torch.manual_seed(0)
true_loading, true_noise = torch.randn(D, d), 0.2 + torch.rand(D)
z = torch.randn(2000, d)
data = z @ true_loading.T + true_noise * torch.randn(2000, D)
train, val = data[:1600], data[1600:]"""),
    ("md", """\
## Fit with the importance-weighted bound (DReG gradients), with early stopping"""),
    ("code", """\
from pyro_lvm.infer import IWAE, fit

pyro.clear_param_store()
history = fit(model, guide, train, val_data=val, loss=IWAE(8, estimator="dreg"),
              optimizer=pyro.optim.Adam({"lr": 0.02}), epochs=10 if FAST else 150,
              batch_size=100, patience=15, progress=False)
print(history.stop_reason)
marginal = dist.LowRankMultivariateNormal(pyro.param("offset"), pyro.param("loading"),
                                          pyro.param("noise") ** 2)
exact = marginal.log_prob(val).mean().item()
history.plot(reference={"exact -log p(x), validation": -exact})"""),
    ("md", """\
## Check the likelihood three ways

The validation -IWAE bound, the importance-sampled log p(x) (with effective sample sizes and
Pareto k-hat), and the exact Gaussian log-likelihood of factor analysis."""),
    ("code", """\
from pyro_lvm.diagnostics import log_likelihood
from pyro_lvm.diagnostics.plots import plot_evidence_diagnostics

evidence = log_likelihood(model, guide, val, num_particles=200 if FAST else 5000)
print(f"IWAE(8) bound:             {-history.val_loss[history.params_epoch - 1]:.4f}")
print(f"importance-sampled log p:  {evidence.log_px.mean():.4f}")
print(f"exact log p(x):            {exact:.4f}")
plot_evidence_diagnostics(evidence)"""),
    ("md", """\
## The latents: information, aggregate posterior, Bayes' loop, gradient SNR"""),
    ("code", """\
from pyro_lvm.diagnostics import (AggregatePosterior, bayes_loop, information, sample_prior,
                                  snr_versus_particles)
from pyro_lvm.diagnostics.plots import plot_aggregate_vs_prior, plot_snr_versus_particles

info = information(model, guide, train)
print(f"rate {info.rate} = I {info.mutual_information} (ceiling "
      f"{info.mutual_information_ceiling:.2f}) + KL(q(z)||p(z)) {info.marginal_kl}")
print(f"distortion {info.distortion}; active units {info.active_units} of {d}")
q = AggregatePosterior.from_guide(guide, train)
plot_aggregate_vs_prior(q.sample(2000), sample_prior(model, train, q.blocks))"""),
    ("code", """\
loop = bayes_loop(model, guide, train)
print(loop.summary())
loop.plot()"""),
    ("md", """\
The factor-analysis posterior is a correlated Gaussian, and this guide is mean-field and
amortized, so the Bayes' loop can fail without any bug: here the rank histograms show it
while the marginals of q(z) and r(z) nearly agree. The comparison to make before hunting
bugs is a richer guide (a full covariance).

Last, the gradient signal-to-noise ratio of this model's and guide's parameters against the
number of particles K (Rainforth et al. 2018): the model's SNR grows like sqrt(K); with the
plain IWAE gradient the guide's SNR collapses as K grows, down to where it cannot be told
from zero with this many gradient samples (estimated as 0, slope nan), while DReG keeps it
of order one."""),
    ("code", """\
# per datapoint, as in the paper: one training point, replicated 64 times in the batch
# (independent particles per copy multiply the SNR by 8 and leave the slopes unchanged)
particles = [1, 4, 16] if FAST else [1, 4, 16, 64]
point = train[:1].expand(64, -1)
snr = {name: snr_versus_particles(model, guide, point,
                                  lambda k, e=estimator: IWAE(k, estimator=e), particles,
                                  num_samples=10 if FAST else 100)
       for name, estimator in (("IWAE", "reparam"), ("DReG", "dreg"))}
plot_snr_versus_particles(snr)"""),
]

NOTEBOOKS = {"01_ppca_classical_vs_amortized.ipynb": PPCA_GAPS,
             "03_bayes_loop.ipynb": BAYES_LOOP,
             "06_your_own_model.ipynb": YOUR_OWN}


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md"
                else nbformat.v4.new_code_cell(src) for kind, src in cells]
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a fresh kernel of this interpreter."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(HERE)}})
    client.execute()
    return nb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="execute only, save nothing")
    parser.add_argument("names", nargs="*", help="notebooks to build (default: all)")
    args = parser.parse_args()
    for name in args.names or NOTEBOOKS:
        t = time.perf_counter()
        nb = execute(build(name, NOTEBOOKS[name]))
        if not args.check:
            nbformat.write(nb, HERE / name)
        mode = "fast" if os.environ.get("PYRO_LVM_FAST") == "1" else "full"
        print(f"{name}: {time.perf_counter() - t:.1f} s ({mode} mode)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
