"""Source of tutorials/03_bayes_loop.ipynb (Bayes' loop); see tutorials/build.py."""

CELLS = [
    ("md", """\
# 03 · Bayes' loop: the self-consistency check that catches bugs in inference code

**Claim** (Lange, *Common misconceptions about hierarchical generative models*; Talts et al.
2018): draw z from the prior r(z), x from p(x | z), and infer q(z | x). If inference is
right, the average of all those posteriors is the prior — and, sharper, the rank of each true
z among draws from its posterior is uniform (simulation-based calibration, SBC). Any bug in
the inference code shows up as a mismatch; so does an approximate family that cannot
represent the posterior, which is *not* a bug."""),
    ("setup", ""),
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
