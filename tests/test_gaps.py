"""inference_gaps against closed forms: PPCA's correlated posterior (the mean-field gap is
0.5 (sum_i log Lambda_ii - log det Lambda)), the exact posterior (no gap at all), and the
explaining-away toy of tutorial 02 on a grid."""

import math

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from test_rich_guides import _correlated_ppca

from pyro_lvm.contract import PairError
from pyro_lvm.diagnostics import inference_gaps
from pyro_lvm.guides import (
    AmortizedFlow,
    AmortizedMultivariateNormal,
    AmortizedNormal,
    PerDatapointFlow,
    PerDatapointNormal,
)
from pyro_lvm.infer import fit
from pyro_lvm.infer.importance import importance_sample
from pyro_lvm.models import SparseCoding


def _mean_field_gap(ppca) -> float:
    """KL(q* || p) of the best diagonal Normal for a Normal posterior of precision Lambda."""
    w, s2 = ppca.weight.detach(), ppca.noise_variance.detach()
    lam = (w.T @ w + s2 * torch.eye(w.shape[1], dtype=w.dtype)) / s2
    return float(0.5 * (lam.diagonal().log().sum() - torch.logdet(lam)))


@pytest.fixture(scope="module")
def ppca_gaps():
    ppca = _correlated_ppca()
    x = ppca.sample(20)
    torch.manual_seed(0)
    gaps = inference_gaps(ppca.model, AmortizedNormal(ppca.model, hidden=(8,)).double(), x,
                          richer=AmortizedMultivariateNormal(ppca.model, hidden=(8,)).double(),
                          steps=400)
    return ppca, x, gaps


def test_the_mean_field_approximation_gap_is_the_closed_form(ppca_gaps):
    ppca, x, gaps = ppca_gaps
    closed = _mean_field_gap(ppca)
    assert closed > 0.5  # a strongly correlated posterior (tutorial 01's setting gives 0.0896)
    est = gaps.estimates()["approximation_gap"]
    assert abs(est.value - closed) < 0.02 + 3 * est.se, (est, closed)
    # against the exact log p(x) too: the refinement reaches the family's best member
    exact = ppca.log_likelihood(x).detach().double()
    assert abs(float((exact - gaps.elbo_best).mean()) - closed) < 0.03
    # the full-covariance family closes it (to Monte Carlo error), and is the proposal
    richer = gaps.estimates()["richer_approximation_gap"]
    assert abs(richer.value) < 0.02 + 3 * richer.se
    assert float((gaps.log_px - exact).abs().max()) < 0.05
    # an untrained encoder: its amortization gap is large, and the summary says which
    assert gaps.estimates()["amortization_gap"].value > 1
    assert "amortization gap dominates" in gaps.summary()
    assert len(gaps.plot().axes) == 3


def test_the_exact_posterior_has_no_gap():
    torch.manual_seed(1)
    ppca = _correlated_ppca()
    x = ppca.sample(8)
    gaps = inference_gaps(ppca.model, ppca.exact_posterior, x, steps=30)
    exact = ppca.log_likelihood(x).detach().double()
    assert float(gaps.amortization_gap.abs().max()) < 1e-6
    assert float((gaps.elbo - exact).abs().max()) < 1e-6
    assert float(gaps.approximation_gap.abs().max()) < 1e-6
    assert "negligible" in gaps.summary()


def test_an_unfinished_refinement_is_reported_not_used_silently():
    ppca = _correlated_ppca()
    x = ppca.sample(10)
    gaps = inference_gaps(ppca.model, AmortizedNormal(ppca.model, hidden=(8,)).double(), x,
                          steps=8, lr=0.01)
    assert int(gaps.converged.sum()) < 10
    assert "had not converged" in gaps.summary()


def test_flows_are_refined_through_their_family():
    torch.manual_seed(0)
    ppca = _correlated_ppca()
    x = ppca.sample(6)
    guide = AmortizedFlow(ppca.model, hidden=(8,), context_dim=2).double()
    gaps = inference_gaps(ppca.model, guide, x, steps=20, num_particles=50)
    assert bool(torch.isfinite(gaps.elbo_best).all())
    assert bool((gaps.elbo_best >= gaps.elbo - 0.05).all())


def test_a_family_it_cannot_read_is_refused_by_site():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            p = pyro.sample("p", dist.Beta(2.0, 2.0))
            pyro.sample("x", dist.Bernoulli(p), obs=x)

    def guide(x):
        a = pyro.param("a", torch.ones(()), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("p", dist.Beta(a, 2.0))

    with pytest.raises(PairError, match="site 'p' is a Beta"):
        inference_gaps(model, guide, torch.ones(5), steps=2)


def test_a_flow_beats_a_diagonal_normal_on_the_explaining_away_toy():
    """One pixel, two features, alpha = 0.7 (tutorial 02): the posterior on x1 + x2 = I is
    anti-correlated (and bimodal for a bright pixel). KL(q || p) = log p(I) - ELBO with log
    p(I) on a grid."""
    toy = SparseCoding(patch_dim=1, num_features=2, alpha=0.7, noise_scale=0.3).double()
    with torch.no_grad():
        toy.weight.fill_(1.0)
    grid = torch.linspace(-8, 8, 321, dtype=torch.double)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([a.flatten(), b.flatten()], -1)
    pixel = torch.tensor([[4.0]], dtype=torch.double)
    log_joint = toy.prior().log_prob(points) + dist.Normal(
        points @ toy.dictionary.T.detach(), toy.noise_scale).to_event(1).log_prob(pixel)
    log_p = float(log_joint.logsumexp(0) + 2 * math.log(float(grid[1] - grid[0])))
    kl = {}
    for name, make in (("normal", lambda: PerDatapointNormal(toy.model, num_data=1)),
                       ("flow", lambda: PerDatapointFlow(toy.model, num_data=1,
                                                         context_dim=2))):
        pyro.clear_param_store()
        torch.manual_seed(1)
        guide = make().double()
        fit(toy.model, guide, pixel, optimizer=pyro.optim.Adam({"lr": 0.02}), epochs=500,
            batch_size=None, progress=False,
            loss=pyro.infer.Trace_ELBO(num_particles=8, vectorize_particles=True))
        with torch.no_grad():
            lw = importance_sample(toy.model, guide, (pixel,), None, 4000,
                                   tempered=False).log_weights
        kl[name] = log_p - float(lw.mean())
    assert kl["normal"] > 1.0 and kl["flow"] < 0.5 * kl["normal"], kl
