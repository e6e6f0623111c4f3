"""GeneralizedNormal against scipy.stats.gennorm."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from pyro_lvm.distributions import GeneralizedNormal

ALPHAS = [0.5, 1.0, 2.0, 4.0]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_log_prob_cdf_moments_entropy_match_scipy(alpha):
    loc, scale = 0.3, 1.7
    d = GeneralizedNormal(torch.tensor(loc, dtype=torch.double),
                          torch.tensor(scale, dtype=torch.double),
                          torch.tensor(alpha, dtype=torch.double))
    ref = stats.gennorm(alpha, loc=loc, scale=scale)
    x = torch.linspace(-6, 6, 101, dtype=torch.double)
    np.testing.assert_allclose(d.log_prob(x).numpy(), ref.logpdf(x.numpy()), rtol=1e-6,
                               atol=1e-10)
    np.testing.assert_allclose(d.cdf(x).numpy(), ref.cdf(x.numpy()), rtol=1e-6, atol=1e-10)
    assert float(d.mean) == pytest.approx(ref.mean())
    assert float(d.variance) == pytest.approx(ref.var(), rel=1e-6)
    assert float(d.entropy()) == pytest.approx(ref.entropy(), rel=1e-6)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_samples_pass_a_ks_test(alpha):
    torch.manual_seed(0)
    d = GeneralizedNormal(0.3, 1.7, alpha)
    x = d.sample((4000,)).double().numpy()
    assert stats.kstest(x, stats.gennorm(alpha, loc=0.3, scale=1.7).cdf).pvalue > 0.01


def test_ks_catches_a_wrong_sampler():
    """Power: samples of alpha = 2 are rejected as alpha = 1 (Laplace)."""
    torch.manual_seed(0)
    x = GeneralizedNormal(0.0, 1.0, 2.0).sample((4000,)).numpy()
    assert stats.kstest(x, stats.gennorm(1.0).cdf).pvalue < 1e-6


def test_rsample_is_differentiable_in_every_parameter():
    loc, scale, alpha = (torch.tensor(v, requires_grad=True) for v in (0.2, 1.5, 0.8))
    torch.manual_seed(0)
    x = GeneralizedNormal(loc, scale, alpha).rsample((1000,))
    x.abs().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad) for p in (loc, scale, alpha))
    # d E|x - loc| / d scale = E|x - loc| / scale: compare with the Monte Carlo value
    torch.manual_seed(1)
    y = GeneralizedNormal(0.0, scale, 0.8).rsample((20000,))
    scale.grad = None
    y.abs().mean().backward()
    assert float(scale.grad) == pytest.approx(float(y.abs().mean().detach() / scale.detach()),
                                              rel=1e-4)


def test_works_inside_plates_and_with_to_event():
    def model():
        with pyro.plate("data", 5):
            return pyro.sample("z", GeneralizedNormal(torch.zeros(3), 1.0, 0.7).to_event(1))

    trace = pyro.poutine.trace(model).get_trace()
    assert trace.nodes["z"]["value"].shape == (5, 3)
    assert trace.log_prob_sum().isfinite()
    assert isinstance(GeneralizedNormal(0.0, 1.0, 1.0).expand([4]), dist.TorchDistribution)


@pytest.mark.parametrize("kwargs, name", [(dict(alpha=0.0), "alpha"), (dict(alpha=-1.0), "alpha"),
                                          (dict(scale=-2.0), "scale")])
def test_invalid_parameters_name_the_parameter(kwargs, name):
    args = dict(loc=0.0, scale=1.0, alpha=1.0) | kwargs
    with pytest.raises(ValueError, match=f"Expected parameter {name}"):
        GeneralizedNormal(**args, validate_args=True)


# -- IndependentBernoulli: Bernoulli(logits).to_event(1), summed before negated -----------------
def test_independent_bernoulli_equals_pyros_bernoulli_to_event():
    from pyro_lvm.distributions import IndependentBernoulli

    torch.manual_seed(0)
    logits = (3 * torch.randn(4, 5, 7)).requires_grad_()  # (particles, rows, features)
    x = (torch.rand(5, 7) < 0.4).float()                  # the data broadcast over particles
    ours, theirs = IndependentBernoulli(logits), dist.Bernoulli(logits=logits).to_event(1)
    lp, ref = ours.log_prob(x), theirs.log_prob(x)
    assert lp.shape == ref.shape == (4, 5)
    torch.testing.assert_close(lp, ref, rtol=0, atol=1e-6)
    g, = torch.autograd.grad(lp.sum(), logits)
    g_ref, = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-7)
    assert ours.event_shape == theirs.event_shape and ours.batch_shape == theirs.batch_shape
    torch.testing.assert_close(ours.mean, theirs.mean)
    assert ours.sample((2,)).shape == (2, 4, 5, 7)
    wide = ours.expand((3, 4, 5))  # what a particle plate does
    assert isinstance(wide, IndependentBernoulli) and wide.batch_shape == (3, 4, 5)
    torch.testing.assert_close(wide.log_prob(x), ref.expand(3, 4, 5), rtol=0, atol=1e-6)


def test_independent_bernoulli_validates_its_support_and_logits():
    from pyro_lvm.distributions import IndependentBernoulli

    with pytest.raises(ValueError, match="support"):
        IndependentBernoulli(torch.zeros(2, 3), validate_args=True).log_prob(
            torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="logits"):
        IndependentBernoulli(torch.full((2, 3), float("nan")), validate_args=True)
