"""Bayes' loop: size (no false alarms on a correct pair) and power (planted bugs caught)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_lvm.datasets import from_model
from pyro_lvm.diagnostics import bayes_loop, information, prior_gap
from pyro_lvm.diagnostics.bayes_loop import min_rows
from pyro_lvm.guides import PerDatapointNormal
from pyro_lvm.infer import fit
from pyro_lvm.models import PPCA

SEEDS = range(40)
SHAPE = torch.zeros(300, 5)  # one simulated data set of 300 points in 5 dimensions


def make_ppca(seed, correlated=False):
    """A PPCA whose offset mu has the norm of the data's spread sqrt(trace C)."""
    torch.manual_seed(1000 + seed)
    ppca = PPCA(5, 2)
    with torch.no_grad():
        w = torch.randn(5, 2)
        if correlated:  # nearly parallel columns: a strongly correlated posterior
            w[:, 1] = w[:, 0] + 0.3 * torch.randn(5)
        ppca.decoder.weight.copy_(w)
        ppca.decoder.log_noise_variance.fill_(math.log(0.5))
        spread = math.sqrt(float(w.pow(2).sum()) + 5 * 0.5)
        mu = torch.randn(5)
        ppca.decoder.loc.copy_(mu / mu.norm() * spread)
    return ppca


def planted(ppca, bug):
    """The exact posterior with one bug planted in it."""
    def guide(x):
        post = ppca.posterior(x)
        mean, tril = post.loc, post.scale_tril
        if bug == "scale x 0.5":
            tril = 0.5 * tril
        elif bug == "scale x 2":
            tril = 2.0 * tril
        elif bug == "mean + sd / 2":
            mean = mean + 0.5 * post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
        elif bug == "forgot to subtract mu":
            w, s2 = ppca.weight, ppca.noise_variance
            mean = torch.linalg.solve(w.T @ w + s2 * torch.eye(2), w.T @ x.T).T
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean, scale_tril=tril))
    return guide


def test_size_exact_posterior_passes():
    """Measured over 300 seeds: 4 false alarms (1.3%) at level 0.01."""
    passed = [bayes_loop(p.model, p.exact_posterior, SHAPE, seed=s).passed
              for s in SEEDS for p in [make_ppca(s)]]
    assert sum(passed) >= 0.95 * len(passed)


@pytest.mark.parametrize("bug", ["scale x 0.5", "scale x 2", "mean + sd / 2",
                                 "forgot to subtract mu"])
def test_power_planted_bugs_are_caught(bug):
    caught = [not bayes_loop(p.model, planted(p, bug), SHAPE, seed=s).passed
              for s in SEEDS for p in [make_ppca(s)]]
    assert sum(caught) >= 0.95 * len(caught)


def test_mean_field_guide_on_a_correlated_posterior_reports_the_gap():
    ppca = make_ppca(0, correlated=True)

    def mean_field(x):  # the best mean-field Gaussian: variances 1 / diag(precision)
        post = ppca.posterior(x)
        precision = torch.linalg.inv(post.covariance_matrix[0])
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(post.loc, precision.diagonal().rsqrt()).to_event(1))

    result = bayes_loop(ppca.model, mean_field, SHAPE)
    assert not result.passed
    assert (result.variance_ratio < 1).all()  # q(z) is too narrow: the gap, by how much
    assert "approximate family" in result.summary()
    fig = result.plot()
    assert len(fig.axes) == 6  # 3 rows x 2 coordinates


def test_non_amortized_guide_is_refitted_to_the_simulated_data():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    guide = PerDatapointNormal(model, num_data=300)

    def refit(x_sim):
        optimizer = pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.01 ** (1 / 1500)})
        fit(model, guide, x_sim, optimizer=optimizer, epochs=300, batch_size=60,
            progress=False)

    result = bayes_loop(model, guide, torch.zeros(300), refit=refit)
    assert result.passed, result.summary()
    assert abs(result.variance_ratio[0] - 1) < 0.25


def test_prior_gap_on_real_data():
    ppca = make_ppca(1)
    good = prior_gap(ppca.model, ppca.exact_posterior, ppca.sample(1000))
    assert float(good.kl) < 0.05 and good.two_sample.p_value > 0.01
    # two well-separated clusters: the best PPCA misfits, and q(z) is not the prior
    torch.manual_seed(0)
    x = torch.cat([torch.randn(500, 5) * 0.3 + 2.0, torch.randn(500, 5) * 0.3 - 2.0])
    misfit = PPCA(5, 2).fit_closed_form(x)
    bad = prior_gap(misfit.model, misfit.exact_posterior, x)
    assert float(bad.kl) > 0.3 and bad.two_sample.p_value < 0.01


def test_bad_input():
    ppca = make_ppca(0)

    def no_observation(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="no observation site"):
        bayes_loop(no_observation, ppca.guide, SHAPE)

    def two_latents(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("extra", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z @ ppca.weight.T, 1.0).to_event(1), obs=x)

    with pytest.raises(ValueError, match="does not sample the model's latent site 'extra'"):
        bayes_loop(two_latents, ppca.exact_posterior, SHAPE)
    with pytest.raises(ValueError, match="num_posterior_samples must be at least 2"):
        bayes_loop(ppca.model, ppca.exact_posterior, SHAPE, num_posterior_samples=1)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        bayes_loop(ppca.model, ppca.exact_posterior, SHAPE, level=1.5)


def _two_observations(x):
    """x ~ N(z, 0.5^2) observed after an unrelated observation of the data's shape."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("noise", dist.Normal(0.0, 1.0), obs=torch.zeros_like(x))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def _exact_guide(x):  # z | x ~ N(0.8 x, 0.2) for the model above
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.8 * x, math.sqrt(0.2)))


def test_the_simulated_data_is_found_from_the_trace_not_by_shape():
    # regression: the first observed site with the data's shape was taken as x, here the
    # unrelated "noise", so a correct pair failed; now the sites come from the trace
    data = torch.zeros(300)
    with pytest.raises(ValueError, match=r"exactly one observed site.*\['noise', 'x'\]"):
        bayes_loop(_two_observations, _exact_guide, data)
    assert bayes_loop(_two_observations, _exact_guide, data, obs_site="x").passed
    assert not bayes_loop(_two_observations, _exact_guide, data, obs_site="noise").passed
    with pytest.raises(ValueError, match=r"obs_site='y'.*\['noise', 'x'\]"):
        bayes_loop(_two_observations, _exact_guide, data, obs_site="y")


def test_bayes_loop_simulates_with_the_one_simulator_of_from_model():
    seen = []
    data = torch.zeros(300)
    bayes_loop(_two_observations, _exact_guide, data, seed=5, obs_site="x", refit=seen.append)
    sim = from_model(_two_observations, data, seed=5, obs_site="x")
    assert torch.equal(seen[0], sim.x)


def test_data_too_small_for_the_statistics_is_refused():
    """Issue 17, item 7: 2 rows "passed" with p = 1.0, 1 row failed inside the energy test,
    and information() on 1 row returned numbers with a standard error of nan."""
    ppca = make_ppca(0)
    for rows in (1, 2, 9):
        with pytest.raises(ValueError, match=r"bayes_loop needs at least 10 rows .* got "
                                             rf"{rows}"):
            bayes_loop(ppca.model, ppca.exact_posterior, torch.zeros(rows, 5))
    with pytest.raises(ValueError, match="at least 15 rows"):  # 3 ranks split 2 : 1
        bayes_loop(ppca.model, ppca.exact_posterior, torch.zeros(14, 5),
                   num_posterior_samples=2)
    assert min_rows(99) == 10 and min_rows(2) == 15 and min_rows(3) == 10
    bayes_loop(ppca.model, ppca.exact_posterior, torch.zeros(10, 5))  # the fewest accepted
    x = ppca.sample(3)
    with pytest.raises(ValueError, match="information needs at least 2 rows of data.* got 1"):
        information(ppca.model, ppca.exact_posterior, x[:1])
    with pytest.raises(ValueError, match="prior_gap needs at least 2 rows"):
        prior_gap(ppca.model, ppca.exact_posterior, x[:1])
    with pytest.raises(ValueError, match="max_points must be at least 2"):
        information(ppca.model, ppca.exact_posterior, x, max_points=1)
    info = information(ppca.model, ppca.exact_posterior, x[:2])
    assert math.isfinite(info.rate.se) and math.isfinite(info.mutual_information.se)
