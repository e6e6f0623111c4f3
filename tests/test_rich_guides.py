"""Full-covariance and flow guides for any model(x): their families against closed forms, and
every objective and diagnostic with them."""

import math

import pyro
import pyro.optim
import pytest
import torch

from pyro_lvm.diagnostics import (
    AggregatePosterior,
    MixtureAggregatePosterior,
    bayes_loop,
    information,
    log_likelihood,
)
from pyro_lvm.guides import (
    AmortizedFlow,
    AmortizedMultivariateNormal,
    AmortizedNormal,
    PerDatapointFlow,
    PerDatapointMultivariateNormal,
    PerDatapointNormal,
)
from pyro_lvm.infer import IWAE, fit
from pyro_lvm.models import PPCA, VAE
from pyro_lvm.nn import inverse_softplus


def _correlated_ppca():
    """PPCA whose posterior is correlated: a W whose columns are not orthogonal."""
    torch.manual_seed(2)
    ppca = PPCA(5, 2).double()
    with torch.no_grad():
        ppca.decoder.weight.copy_(torch.tensor([[1.0, 0.9], [0.5, 0.6], [1.0, 1.1],
                                                [0.2, 0.1], [0.7, 0.8]], dtype=torch.float64))
        ppca.decoder.log_noise_variance.fill_(math.log(0.3))
    return ppca


def test_the_full_covariance_family_holds_the_exact_posterior():
    """With lambda set to the exact posterior's mean and Cholesky factor, every importance
    weight is p(x): the ELBO equals log p(x) and the ESS is the number of particles."""
    ppca = _correlated_ppca()
    x = ppca.sample(6)
    guide = PerDatapointMultivariateNormal(ppca.model, num_data=6)
    guide(x)  # creates lambda
    post = ppca.posterior(x)
    tril = post.scale_tril
    with torch.no_grad():
        guide.params[:, :2] = post.loc
        guide.params[:, 2:4] = inverse_softplus(tril.diagonal(dim1=-2, dim2=-1) - 1e-5)
        guide.params[:, 4] = tril[:, 1, 0]
    ev = log_likelihood(ppca.model, guide, x, num_particles=50)
    torch.testing.assert_close(ev.log_px, ppca.log_likelihood(x), atol=1e-8, rtol=0)
    assert bool((ev.ess > 49.99).all())
    # a diagonal family cannot: its weights vary, the ESS falls below the particles
    diag = PerDatapointNormal(ppca.model, num_data=6)
    diag(x)
    with torch.no_grad():
        diag.loc.copy_(post.loc)
        diag.raw_scale.copy_(inverse_softplus(post.covariance_matrix.diagonal(
            dim1=-2, dim2=-1).sqrt() - 1e-5))
    assert float(log_likelihood(ppca.model, diag, x, num_particles=50).ess.mean()) < 49


@pytest.mark.parametrize("make", [
    lambda m: AmortizedMultivariateNormal(m, hidden=(16,)),
    lambda m: AmortizedFlow(m, hidden=(16,), context_dim=3),
    lambda m: AmortizedFlow(m, hidden=(16,), context_dim=3, flow="spline", num_flows=1),
], ids=["mvn", "flow", "spline flow"])
@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_rich_guides_train_with_every_estimator_and_feed_every_diagnostic(make, estimator):
    torch.manual_seed(0)
    vae = VAE(10, 3, hidden=(8,))
    x = (torch.rand(60, 10) < 0.3).float()
    guide = make(vae.model)
    h = fit(vae.model, guide, x, loss=IWAE(3, estimator=estimator),
            optimizer=pyro.optim.Adam({"lr": 0.01}), epochs=3, batch_size=20, progress=False)
    assert h.train_loss[-1] < h.train_loss[0]
    ev = log_likelihood(vae.model, guide, x[:10], num_particles=20)
    assert bool(torch.isfinite(ev.log_px).all())
    info = information(vae.model, guide, x)
    assert abs(info.surgery_residual()) < 1e-5
    q = AggregatePosterior.from_guide(guide, x)
    assert isinstance(q, MixtureAggregatePosterior)
    # q(z) at a point is the mean of the components' densities (written out by hand)
    z = q.sample(4)
    fn = pyro.poutine.trace(guide).get_trace(x).nodes["z"]["fn"]
    by_hand = fn.log_prob(z[:, None, :].expand(4, 60, 3)).logsumexp(1) - math.log(60)
    torch.testing.assert_close(q.log_prob(z), by_hand, atol=1e-5, rtol=1e-5)
    assert 0 <= bayes_loop(vae.model, guide, x).p_value <= 1


@pytest.mark.parametrize("cls", [AmortizedMultivariateNormal, AmortizedFlow, PerDatapointFlow])
def test_rich_guides_are_saved_and_loaded(tmp_path, cls):
    from pyro_lvm import load, save

    torch.manual_seed(0)
    ppca = PPCA(5, 2)
    x = ppca.sample(8)
    guide = cls(ppca.model, num_data=8) if cls is PerDatapointFlow else cls(ppca.model)
    guide(x)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save(tmp_path, ppca, guide, dataset=x)
    loaded = load(tmp_path)
    assert type(loaded.objects["guide"]) is cls
    for (k, a), (_, b) in zip(guide.state_dict().items(),
                              loaded.objects["guide"].state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_the_normal_guides_are_unchanged_by_the_families():
    """AmortizedNormal's first draw from a fixed seed, as before the families existed."""
    torch.manual_seed(0)
    vae = VAE(8, 2, hidden=(4,))
    guide = AmortizedNormal(vae.model, hidden=(5,))
    x = torch.ones(3, 8)
    guide(x)
    loc, scale = guide.family.distributions(guide.family_params(x, torch.arange(3)))[
        "z"].base_dist.loc, None
    assert loc.shape == (3, 2) and scale is None
    last = guide.encoder[-1]
    assert torch.equal(last.bias[2:], torch.full((2,), inverse_softplus(0.1)))
    assert torch.equal(last.bias[:2], torch.zeros(2))


def test_a_bad_flow_name_is_refused():
    with pytest.raises(ValueError, match="flow must be one of"):
        AmortizedFlow(PPCA(4, 2).model, flow="planar")


def test_a_flow_that_goes_non_finite_stops_fit_with_its_clear_error():
    from pyro_lvm.infer import TrainingDivergedError

    torch.manual_seed(0)
    vae = VAE(10, 3, hidden=(8,))
    x = (torch.rand(40, 10) < 0.3).float()
    guide = AmortizedFlow(vae.model, hidden=(8,), context_dim=2)
    guide(x)
    with torch.no_grad():  # a transform whose network outputs inf: its log-det is not finite
        next(guide.family.transforms[0][0].parameters()).fill_(float("inf"))
    with pytest.raises(TrainingDivergedError, match="step 1"):
        fit(vae.model, guide, x, epochs=1, batch_size=20, progress=False)
