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
from torch.distributions import Normal

from pyro_lvm.contract import PairError
from pyro_lvm.diagnostics import AggregatePosterior, bayes_loop, information, log_likelihood
from pyro_lvm.handlers import minibatch
from pyro_lvm.infer import IWAE, importance_sample
from pyro_lvm.infer.particles import VectorizationWarning, pair_info


def _normal_model(x):
    """z ~ N(0, 1), x ~ N(z, 1) per datapoint; returns z."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)
    return z


def _normal_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x, 1.0))


def test_an_outer_site_that_reads_the_local_latents_is_refused():
    def model(x):
        z = _normal_model(x)
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
    model = _normal_model

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(x))

    for call in (lambda: log_likelihood(model, guide, torch.randn(3)),
                 lambda: IWAE(8).loss(model, guide, torch.randn(3)),
                 lambda: information(model, guide, torch.randn(3))):
        with pytest.raises(PairError, match="guide site 'z' is a point mass"):
            call()


def test_a_guide_site_outside_its_plate_is_named_as_such():
    model = _normal_model

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


def test_a_markov_chain_of_enumerated_states_is_refused_by_name():
    """pyro.markov lets s_0 and s_2 share a dimension; summing it once would be wrong."""
    trans = torch.tensor([[0.8, 0.2], [0.3, 0.7]])

    def model(x):
        with pyro.plate("data", x.shape[0]):
            s = 0
            for t in pyro.markov(range(x.shape[1])):
                s = pyro.sample(f"s_{t}", dist.Categorical(trans[s]),
                                infer={"enumerate": "parallel"})
                pyro.sample(f"x_{t}", dist.Normal(s.float(), 1.0), obs=x[:, t])

    with pytest.raises(PairError, match="enumerated sites 's_0' and 's_2' share one "
                                        "enumeration dimension"):
        log_likelihood(model, lambda x: None, torch.randn(5, 4), num_particles=2)


def test_autonormal_weights_are_its_own_density():
    """AutoNormal samples an auxiliary z_unconstrained and puts a Delta on z: q is a density."""
    from pyro.infer.autoguide import AutoNormal

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1), 0.5), obs=x)

    x = torch.randn(6)
    guide = AutoNormal(model)
    sample = importance_sample(model, guide, (x,), num_particles=3, tempered=False)
    z = sample.values("z")
    loc, scale = pyro.param("AutoNormal.locs.z"), pyro.param("AutoNormal.scales.z")
    want = (Normal(0.0, 1.0).log_prob(z).sum(-1) + Normal(z.sum(-1), 0.5).log_prob(x)
            - Normal(loc, scale).log_prob(z).sum(-1))
    torch.testing.assert_close(sample.log_weights, want.detach(), rtol=1e-5, atol=1e-5)


def test_a_deterministic_site_is_not_taken_for_the_observation():
    w = torch.tensor([[1.0, -0.5], [0.3, 0.8], [0.0, 1.2]])
    cov = torch.linalg.inv(torch.eye(2) + w.T @ w)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            mean = pyro.deterministic("mean", z @ w.T, event_dim=1)
            pyro.sample("x", dist.Normal(mean, 1.0).to_event(1), obs=x)

    def guide(x):  # the exact posterior
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(x @ w @ cov, cov))

    assert bayes_loop(model, guide, torch.zeros(200, 3), num_permutations=50).passed


def test_a_plate_that_subsamples_itself_is_refused_with_a_remedy():
    def model(x):
        with pyro.plate("data", x.shape[0], subsample_size=5) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])

    def guide(x):
        with pyro.plate("data", x.shape[0], subsample_size=5) as idx:
            pyro.sample("z", dist.Normal(x[idx], 1.0))

    with pytest.raises(PairError, match=r"subsample_size=5\) subsamples itself.*drop "
                                        r"subsample_size") as caught:
        log_likelihood(model, guide, torch.randn(20))
    assert "Trace Shapes" not in str(caught.value)


def test_bayes_loop_asks_a_per_datapoint_guide_for_refit():
    from pyro_lvm.guides import PerDatapointNormal

    model = _normal_model

    guide = PerDatapointNormal(model, num_data=30)
    with pytest.raises(PairError, match="PerDatapointNormal .* pass refit="):
        bayes_loop(model, guide, torch.zeros(30))


def test_information_on_a_guide_that_samples_a_class_then_a_code():
    """The unlabelled semi-supervised guide: y ~ Categorical, then z | y (exact posterior)."""
    prior_y = torch.tensor([0.5, 0.3, 0.2])
    offsets = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]])

    def model(x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(prior_y))
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z + offsets[y], 1.0).to_event(1), obs=x)

    def joint_y(x):  # (N, 3) log p(x, y): x | y ~ N(offset_y, 2 I)
        return prior_y.log() + Normal(offsets, 2 ** 0.5).log_prob(x[:, None, :]).sum(-1)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=joint_y(x)))
            pyro.sample("z", dist.Normal((x - offsets[y]) / 2, 0.5 ** 0.5).to_event(1))

    x = torch.randn(30, 2) * 2
    info = information(model, guide, x, num_samples=2)
    exact = joint_y(x).logsumexp(-1).mean()
    assert float(info.rate) + float(info.distortion) == pytest.approx(-exact.item(), abs=1e-4)
    assert abs(info.surgery_residual()) < 1e-5
