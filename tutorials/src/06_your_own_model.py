"""Source of tutorials/06_your_own_model.ipynb (your own model); see tutorials/build.py."""

CELLS = [
    ("md", """\
# 06 · Your own model: write it, fit it, check it

**Claim**: the diagnostics need nothing but the contract — a `model(x)` and a `guide(x)`
written as Pyro programs, with the local latents inside `pyro.plate("data", len(x))` and the
observations given with `obs=x`. Here: factor analysis (PPCA with one noise level per
dimension), written from scratch, with a hand-written amortized guide; its exact
log-likelihood is known, so every estimate can be checked."""),
    ("setup", ""),
    ("code", """\
from torch import nn
from torch.distributions import constraints

torch.manual_seed(0)  # the encoder's initial weights, and the data below
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
from pyro_lvm.diagnostics import bayes_loop, information, sample_prior, snr_versus_particles
from pyro_lvm.diagnostics.plots import plot_aggregate_vs_prior, plot_snr_versus_particles

info = information(model, guide, train)
print(f"rate {info.rate} = I {info.mutual_information} (ceiling "
      f"{info.mutual_information_ceiling:.2f}) + KL(q(z)||p(z)) {info.marginal_kl}")
print(f"distortion {info.distortion}; active units {info.active_units} of {d}")
q = info.aggregate  # the aggregate posterior q(z) that information() built on train
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
number of particles K (Rainforth et al. 2018), from 100 gradient estimates per K (the cell
below prints the values it plots): the model's SNR grows like sqrt(K) (fitted slope 0.51 for
both estimators). With the plain IWAE gradient the guide's SNR falls from 1.5 at
K = 1 to where 100 estimates cannot tell it from zero: `snr_versus_particles` reports 0 at
K = 4 and 16 and 0.05 at K = 64, and a log-log slope cannot be fitted through zeros, so it is
reported as nan (not as a steep fall; the figure leaves those points off its log axis).
DReG keeps the guide's SNR of order one at every K (between 0.68 and 3.1, slope -0.06)."""),
    ("code", """\
# per datapoint, as in the paper: one training point, replicated 64 times in the batch
# (independent particles per copy multiply the SNR by 8 and leave the slopes unchanged)
particles = [1, 4, 16] if FAST else [1, 4, 16, 64]
point = train[:1].expand(64, -1)
snr = {name: snr_versus_particles(model, guide, point,
                                  lambda k, e=estimator: IWAE(k, estimator=e), particles,
                                  num_samples=10 if FAST else 100)
       for name, estimator in (("IWAE", "reparam"), ("DReG", "dreg"))}
for name, r in snr.items():
    print(f"{name:5s} model SNR {[round(v, 3) for v in r['snr']['model']]} "
          f"slope {r['slope']['model']:.2f}; guide SNR {[round(v, 3) for v in r['snr']['guide']]} "
          f"slope {r['slope']['guide']:.2f}")
plot_snr_versus_particles(snr)"""),
]
