"""VAE likelihoods, the KL weight, and the priors, against hand-written torch."""

import math
import warnings

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from scipy import stats

from pyro_lvm.models import PPCA, VAE, GaussianToy, SparseCoding, TwoLayerVAE
from pyro_lvm.models.priors import (
    DegeneratePriorWarning,
    FlowPrior,
    GaussianMixturePrior,
    GeneralizedNormalPrior,
    VampPrior,
    make_prior,
)


def traced(vae, x):
    guide_trace = pyro.poutine.trace(vae.guide).get_trace(x)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(vae.model, guide_trace)).get_trace(x)
    return model_trace, guide_trace


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian",
                                        "gaussian_learned"])
def test_likelihoods_match_hand_written_densities(likelihood):
    torch.manual_seed(0)
    vae = VAE(6, 2, hidden=(5,), likelihood=likelihood, beta=4.0)
    x = torch.rand(7, 6)
    if likelihood == "bernoulli":
        x = x.round()
    model_trace, _ = traced(vae, x)
    z = model_trace.nodes["z"]["value"]
    out = vae.decoder(z)
    expected = {
        "bernoulli": lambda: torch.distributions.Bernoulli(logits=out).log_prob(x),
        "continuous_bernoulli":
            lambda: torch.distributions.ContinuousBernoulli(logits=out).log_prob(x),
        "gaussian": lambda: torch.distributions.Normal(out, 0.5).log_prob(x),  # beta = 4
        "gaussian_learned": lambda: torch.distributions.Normal(
            out, torch.nn.functional.softplus(vae.raw_noise_scale) + 1e-4).log_prob(x),
    }[likelihood]().sum(-1)
    torch.testing.assert_close(model_trace.nodes["x"]["fn"].log_prob(x), expected)


def test_kl_weight_scales_the_kl_term_only():
    torch.manual_seed(0)
    vae = VAE(6, 2, hidden=(5,), kl_weight=0.25)
    x = torch.rand(7, 6).round()
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    model_trace, guide_trace = traced(vae, x)
    z = guide_trace.nodes["z"]["value"]
    log_px = model_trace.nodes["x"]["fn"].log_prob(x).sum()
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum()
    log_qz = guide_trace.nodes["z"]["fn"].log_prob(z).sum()
    assert loss == pytest.approx(-(log_px - 0.25 * (log_qz - log_pz)).item(), rel=1e-5)


def test_gaussian_mixture_and_vamp_priors_are_the_mixtures_they_claim():
    torch.manual_seed(0)
    z = torch.randn(9, 2)
    gmm = GaussianMixturePrior(2, num_components=4)
    scales = torch.nn.functional.softplus(gmm.raw_scales) + 1e-6
    by_hand = (torch.distributions.Normal(gmm.locs, scales).log_prob(z[:, None]).sum(-1)
               + torch.log_softmax(gmm.logits, 0)).logsumexp(1)
    torch.testing.assert_close(gmm.distribution().log_prob(z), by_hand)
    vae = VAE(8, 2, hidden=(4,), prior="vamp")
    assert isinstance(vae.prior, VampPrior)
    loc, scale = vae.encode(vae.prior.pseudo_inputs)
    k = loc.shape[0]
    by_hand = (torch.distributions.Normal(loc, scale).log_prob(z[:, None]).sum(-1).logsumexp(1)
               - math.log(k))
    torch.testing.assert_close(vae.prior.distribution().log_prob(z), by_hand)


def test_flow_prior_is_normalized():
    torch.manual_seed(0)
    prior = FlowPrior(2, num_flows=2)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
        grid = torch.linspace(-8, 8, 321)
        zz = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
        mass = prior.distribution().log_prob(zz).exp().sum() * (grid[1] - grid[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=0.01)


def test_generalized_normal_prior_matches_scipy():
    prior = GeneralizedNormalPrior(3, alpha=0.6, scale=1.3)
    z = torch.randn(5, 3, dtype=torch.double)
    expected = stats.gennorm(0.6, scale=1.3).logpdf(z.numpy()).sum(-1)
    torch.testing.assert_close(prior.distribution().log_prob(z),
                               torch.as_tensor(expected), rtol=1e-6, atol=1e-8)


def test_prior_fitted_to_the_aggregate_posterior_warns_when_it_collapses():
    """Fit a mixture prior by maximum likelihood to draws of an aggregate posterior made of
    a few very narrow posteriors: the optimum is the degenerate one (each component onto a
    point). The prior must warn."""
    torch.manual_seed(0)
    centres = torch.randn(4, 2)
    draws = centres.repeat(50, 1) + 1e-4 * torch.randn(200, 2)
    prior = GaussianMixturePrior(2, num_components=4)
    with torch.no_grad():
        prior.locs.copy_(centres + 0.01 * torch.randn(4, 2))
    optimizer = torch.optim.Adam(prior.parameters(), lr=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(400):
            optimizer.zero_grad()
            (-prior.distribution().log_prob(draws).mean()).backward()
            optimizer.step()
    collapse = [w for w in caught if issubclass(w.category, DegeneratePriorWarning)]
    assert len(collapse) == 1  # once, not at every step
    assert "collapsing" in str(collapse[0].message)
    # a healthy prior does not warn
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegeneratePriorWarning)
        GaussianMixturePrior(2).distribution()


def test_every_prior_trains_inside_a_vae():
    from pyro_lvm.infer import fit

    x = (torch.rand(60, 8) < 0.4).float()
    for prior in ("normal", "mixture", "flow", "gennorm", "vamp"):
        pyro.clear_param_store()
        vae = VAE(8, 2, hidden=(6,), prior=prior)
        history = fit(vae.model, vae.guide, x, epochs=2, batch_size=30, progress=False)
        assert all(math.isfinite(v) for v in history.train_loss), prior


@pytest.mark.parametrize("kwargs, match", [
    (dict(likelihood="poisson"), "likelihood must be one of"),
    (dict(prior="laplace"), "prior must be one of"),
    (dict(beta=0.0), "beta must be a finite positive number"),
    (dict(kl_weight=-1.0), "kl_weight must be a finite positive number"),
])
def test_bad_vae_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAE(8, 2, **kwargs)


def test_prior_latent_dim_must_match():
    with pytest.raises(ValueError, match="latent_dim=3, the model 2"):
        make_prior(GaussianMixturePrior(3), 2)
    with pytest.raises(ValueError, match="alpha must be a finite positive number"):
        GeneralizedNormalPrior(2, alpha=-1.0)


@pytest.mark.parametrize("make", [
    lambda: PPCA(4, 2), lambda: VAE(4, 2, hidden=(3,)),
    lambda: TwoLayerVAE(4, (2, 2), ((3,), (3,))), lambda: SparseCoding(4, 5),
    lambda: GaussianToy(4),
], ids=["PPCA", "VAE", "TwoLayerVAE", "SparseCoding", "GaussianToy"])
def test_data_of_another_dtype_are_refused_naming_model_dtypes_and_remedy(make):
    x = torch.zeros(3, 4, dtype=torch.float64)
    model = make()
    with pytest.raises(ValueError, match=rf"^{type(model).__name__}\.model: the data .* are "
                                         r"torch\.float64 but the parameters are "
                                         r"torch\.float32: convert the model with \.double\(\)"):
        model.model(x)
    model.double().model(x)  # the converted model runs
    if hasattr(model, "guide"):
        model.guide(x)
        with pytest.raises(ValueError, match=rf"^{type(model).__name__}\.guide: .*float32"):
            model.guide(x.float())
