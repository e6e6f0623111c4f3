"""Distributions Pyro lacks."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import Independent, TorchDistribution, constraints
from torch.distributions.utils import broadcast_all


class GeneralizedNormal(TorchDistribution):
    """The generalized normal (exponential power) distribution,

        p(x) = alpha / (2 scale Gamma(1/alpha)) exp(-|(x - loc) / scale|^alpha),

    Gaussian for alpha = 2 (with scale = sqrt(2) sigma), Laplace for alpha = 1, sparser
    (heavier-tailed and more peaked) below 1: the sparse prior of Olshausen & Field (1996)
    for alpha < 1. Same parametrization as ``scipy.stats.gennorm(beta=alpha)``.
    Reparameterized sampling: |x - loc|^alpha / scale^alpha ~ Gamma(1/alpha, 1) with a random
    sign (Nadarajah 2005), so gradients reach loc, scale and alpha.

    Example:
        >>> d = GeneralizedNormal(0.0, 1.0, 0.5)
        >>> d.rsample((3,)).shape, round(float(d.log_prob(torch.tensor(0.0))), 4)
        (torch.Size([3]), -1.3863)
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive,
                       "alpha": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, alpha, validate_args=None):
        self.loc, self.scale, self.alpha = broadcast_all(loc, scale, alpha)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GeneralizedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.alpha = self.alpha.expand(batch_shape)
        super(GeneralizedNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        gamma = torch.distributions.Gamma(self.alpha.reciprocal().expand(shape),
                                          torch.ones((), dtype=self.loc.dtype,
                                                     device=self.loc.device))
        magnitude = gamma.rsample().pow(self.alpha.reciprocal())
        sign = torch.randint(0, 2, shape, device=self.loc.device).to(self.loc.dtype) * 2 - 1
        return self.loc + self.scale * sign * magnitude

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        z = ((value - self.loc) / self.scale).abs()
        return (self.alpha.log() - math.log(2.0) - self.scale.log()
                - torch.lgamma(self.alpha.reciprocal()) - z.pow(self.alpha))

    def cdf(self, value):
        """P(X <= value), through the regularized incomplete gamma function."""
        z = (value - self.loc) / self.scale
        half = 0.5 * torch.special.gammainc(self.alpha.reciprocal(), z.abs().pow(self.alpha))
        return 0.5 + torch.sign(z) * half

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        return self.scale.pow(2) * torch.exp(torch.lgamma(3 / self.alpha)
                                             - torch.lgamma(1 / self.alpha))

    def entropy(self):
        return (self.alpha.reciprocal() - self.alpha.log() + math.log(2.0) + self.scale.log()
                + torch.lgamma(self.alpha.reciprocal()))


class IndependentBernoulli(Independent):
    """Independent Bernoulli(logits) pixels as one event: ``Bernoulli(logits=l).to_event(1)``
    with a log-density that sums before it negates,

        log p(x | l) = -sum_d BCE_with_logits(l_d, x_d),

    the same numbers (negation is exact in floating point), one (particles x rows x features)
    tensor fewer in the forward and the backward pass than negating every term first, as
    torch's Bernoulli does. Everything else is ``Independent(Bernoulli(logits), 1)``.

    Example:
        >>> logits = torch.tensor([[0.0, 2.0, -1.0]])
        >>> x = torch.tensor([[1.0, 0.0, 1.0]])
        >>> d = IndependentBernoulli(logits)
        >>> d.event_shape, d.batch_shape
        (torch.Size([3]), torch.Size([1]))
        >>> bool(torch.allclose(d.log_prob(x),
        ...                     dist.Bernoulli(logits=logits).to_event(1).log_prob(x)))
        True
    """

    def __init__(self, logits, validate_args=None):
        super().__init__(dist.Bernoulli(logits=logits, validate_args=validate_args), 1,
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(IndependentBernoulli, _instance)
        batch_shape = torch.Size(batch_shape)
        new.base_dist = self.base_dist.expand(batch_shape + self.event_shape)
        new.reinterpreted_batch_ndims = 1
        torch.distributions.Distribution.__init__(new, batch_shape, self.event_shape,
                                                  validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.base_dist.logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)
