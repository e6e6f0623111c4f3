"""Source of tutorials/01_ppca_classical_vs_amortized.ipynb; see tutorials/build.py."""

CELLS = [
    ("md", """\
# 01 · PPCA: classical VI, amortized VI, and the two gaps

**Claims** (the variational-methods text; Cremer et al. 2018): the ELBO is a lower bound on
log p(x), tight exactly when q(z|x) is the posterior. Classical VI optimizes one q per
datapoint; a VAE's encoder *amortizes* that optimization into one network. The distance from
log p(x) to the ELBO splits into an **approximation gap** (the best q in the family is not the
posterior) and an **amortization gap** (the encoder does not find that best q for every x).
Probabilistic PCA is the model where every one of these quantities is known."""),
    ("setup", ""),
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

## The same decomposition for any guide: `inference_gaps`

Above, the best mean-field member came from a closed form and from a second, classical fit.
`pyro_lvm.diagnostics.inference_gaps` does it for any model and guide: for each datapoint it
refines the guide's own parameters (here the encoder's mean and scale for that x) to the best
member of the family, and reports log p(x) − ELBO split into the approximation gap and the
amortization gap. Given a richer family (`richer=`, here a full-covariance Normal), it
refines that too, shows how much of the approximation gap it closes, and uses it as the
importance-sampling proposal for log p(x)."""),
    ("code", """\
from pyro_lvm.diagnostics import inference_gaps
from pyro_lvm.guides import AmortizedMultivariateNormal

rows = x[: 100 if FAST else 300]
gaps = inference_gaps(frozen, amortized, rows, steps=100 if FAST else 400,
                      richer=AmortizedMultivariateNormal(frozen, hidden=(64,)))
print(gaps.summary())
print(f"closed form: approximation gap {approximation_gap:.4f} nats; exact log p(x) of these "
      f"rows {ppca.log_likelihood(rows).mean():.4f}, importance-sampled "
      f"{gaps.log_px.mean():.4f}")
gaps.plot(title="PPCA after rotating W: the gaps of the mean-field encoder")
plt.show()"""),
    ("md", """\
Read the diagnostic's numbers as bounds. Its refinement is a finite optimization: the ELBO
it reaches is a lower bound on the family's best, so its approximation gap can only be
*above* the closed form (here by about a hundredth of a nat: mean-field moves slowly along a
strongly correlated posterior) and its amortization gap only *below* the true one (the
closed form puts the encoder's at the total gap minus the closed-form approximation gap),
and the datapoints whose ELBO was still rising at the end are counted in the warning rather
than silently used. Even so, the split is clear: nearly all of the distance is the family,
the full-covariance family's gap is a small fraction of it, and the trained encoder's
amortization gap is small. Importance sampling with the same encoder, without refinement,
also closes most of the distance: its estimate of log p(x) lies between the ELBO and the
exact value."""),
    ("code", """\
ev = log_likelihood(frozen, amortized, x[:100], num_particles=200 if FAST else 2000)
print(f"importance-sampled log p(x) with the encoder: {ev.log_px.mean():.4f} "
      f"(exact {ppca.log_likelihood(x[:100]).mean():.4f}, "
      f"ELBO {-evaluate_loss(frozen, amortized, x[:100], loss=many):.4f})")"""),
]
