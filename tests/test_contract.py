"""The contract's edges: what a pair may not do (each refused by name), and what pyro_lvm must
not do to a pair (consume its random numbers, move its BatchNorm statistics, reuse a stale
verdict). Each case was a silent wrong number or a side effect before it was fixed."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_lvm.contract import PairError
from pyro_lvm.diagnostics import AggregatePosterior, information, log_likelihood
from pyro_lvm.handlers import minibatch
from pyro_lvm.infer import IWAE
from pyro_lvm.infer.particles import VectorizationWarning, pair_info


def _normal_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x, 1.0))


def test_an_outer_site_that_reads_the_local_latents_is_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        pyro.factor("penalty", -5 * z.sum() ** 2)  # outside the plate, reads every z

    for vectorize in ("auto", False):
        with pytest.raises(PairError, match="site 'penalty' is outside pyro.plate.*changes "
                                            "with the local latents"):
            log_likelihood(model, _normal_guide, torch.randn(4), vectorize=vectorize)


def test_keyword_arguments_are_part_of_the_cached_verdict():
    """SS-VAE style: labelled calls observe y, unlabelled ones sample it from a Categorical."""
    def model(x, y=None):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(torch.ones(2) / 2), obs=y)
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(torch.tensor([-1.0, 1.0])[y] + z, 1.0), obs=x)

    def guide(x, y=None):
        with pyro.plate("data", x.shape[0]):
            if y is None:
                pyro.sample("y", dist.Categorical(logits=torch.stack([-x, x], -1)))
            pyro.sample("z", dist.Normal(x, 1.0))

    x, y = torch.randn(6), torch.randint(2, (6,))
    loss = IWAE(4)
    loss.loss(model, guide, x, y=y)
    with pytest.raises(PairError, match="guide site 'y' .*cannot be reparameterized"):
        loss.loss(model, guide, x)


def test_a_point_mass_guide_is_refused():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(x))

    for call in (lambda: log_likelihood(model, guide, torch.randn(3)),
                 lambda: IWAE(8).loss(model, guide, torch.randn(3)),
                 lambda: information(model, guide, torch.randn(3))):
        with pytest.raises(PairError, match="guide site 'z' is a point mass"):
            call()


def test_a_guide_site_outside_its_plate_is_named_as_such():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):  # forgot the plate
        pyro.sample("z", dist.Normal(x, 1.0).to_event(1))

    with pytest.raises(PairError, match="guide site 'z' is outside pyro.plate\\('data'\\) in "
                                        "the guide but inside it in the model"):
        IWAE(2).loss(model, guide, torch.randn(4))


def test_a_common_scale_multiplies_the_bound_not_each_log_density():
    """poutine.scale of model and guide alike (loss normalization) must leave IWAE a bound."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * x, 1.0))

    x = torch.randn(20)
    pyro.set_rng_seed(0)
    plain = IWAE(16).loss(model, guide, x)
    pyro.set_rng_seed(0)
    scaled = IWAE(16).loss(pyro.poutine.scale(model, scale=0.02),
                           pyro.poutine.scale(guide, scale=0.02), x)
    assert scaled / 0.02 == pytest.approx(plain, rel=1e-5)


def test_stl_on_a_non_invertible_flow_is_refused_by_name():
    flow = dist.transforms.Planar(1)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("flow", flow)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.TransformedDistribution(
                dist.Normal(x, 1.0).to_event(1), [flow]))

    x = torch.randn(5, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VectorizationWarning)  # the check copes with the flow
        IWAE(4).loss_and_grads(model, guide, x)
        with pytest.raises(PairError, match="log q at the detached draw of guide site 'z'.*"
                                            "estimator='reparam'"):
            IWAE(4, estimator="stl").loss_and_grads(model, guide, x)


def test_a_batch_the_check_never_saw_falls_back_with_the_right_numbers():
    """(z @ W.T).squeeze() broadcasts for B > 1 but not for a last batch of one row."""
    torch.manual_seed(0)
    w = torch.tensor([[0.7], [-0.4], [1.1]])

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal((z @ w.T).squeeze(), 1.0).to_event(1), obs=x)

    def guide(x):  # the exact posterior
        post_cov = torch.linalg.inv(torch.eye(1) + w.T @ w)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(x @ w @ post_cov, post_cov))

    x = torch.randn(6, 3)
    with pytest.warns(VectorizationWarning, match="failed on this batch"):
        evidence = log_likelihood(model, guide, x, num_particles=30, chunk_size=5)
    exact = dist.MultivariateNormal(torch.zeros(3), torch.eye(3) + w @ w.T).log_prob(x)
    torch.testing.assert_close(evidence.log_px.float(), exact, rtol=1e-4, atol=1e-4)


def test_checks_and_diagnostics_leave_batchnorm_and_the_rng_alone():
    decoder = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x[:, :2], 1.0).to_event(1))

    x = torch.randn(10, 3)
    state = torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VectorizationWarning)
        info = pair_info(model, guide, (x,))
        assert torch.equal(torch.random.get_rng_state(), state)
        log_likelihood(model, guide, x, num_particles=8)
        information(model, guide, x)
        AggregatePosterior.from_guide(guide, x)
    assert not info.vectorized and decoder.training
    bn = decoder[1]
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros(8))


def test_parameter_roles_are_computed_once_per_pair():
    def model(x):
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, scale), obs=x)

    def guide(x):
        s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / 2, s))

    loss = IWAE(3, estimator="dreg")
    for _ in range(5):
        loss.loss_and_grads(model, guide, torch.randn(4))
    assert len(loss._roles._store) == 1


def test_a_categorical_guide_has_exact_moments_and_active_units():
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9]]).repeat(10, 1)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(torch.ones(3) / 3))
            pyro.sample("x", dist.Normal(c.float(), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]) as idx:
            pyro.sample("c", dist.Categorical(probs[idx]))

    x = torch.randn(20)
    with minibatch(torch.arange(20), 20):
        q = AggregatePosterior.from_guide(guide, x)
    means = (probs * torch.arange(3.0)).sum(-1)
    torch.testing.assert_close(q.component_means, means[:, None])
    second = (probs * torch.arange(3.0) ** 2).sum(-1).mean()
    torch.testing.assert_close(q.covariance, (second - means.mean() ** 2).reshape(1, 1))
    assert information(model, guide, x).active_units == 1
    assert math.isfinite(float(information(model, guide, x).rate))
