"""Priors (the texts' regularizers r(z)) pluggable into every model: ``prior.distribution()``
is a distribution over one datapoint's latent vector (event shape (latent_dim,)).

- :class:`StandardNormal`: N(0, I).
- :class:`GaussianMixturePrior`: a learnable mixture of diagonal Gaussians.
- :class:`VampPrior`: the mixture of the guide's posteriors at learned pseudo-inputs
  (Tomczak & Welling 2018).
- :class:`FlowPrior`: N(0, I) pushed through Pyro's affine autoregressive transforms
  (Papamakarios et al. 2017).
- :class:`GeneralizedNormalPrior`: i.i.d. generalized normal, sparse for alpha < 1.

A learned prior pulled towards the aggregate posterior has a degenerate solution: a mixture
collapsing onto a few points (components with vanishing scale). Learnable priors check for it
whenever they build their distribution and warn with :class:`DegeneratePriorWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import affine_autoregressive
from torch import nn

from .._checks import check_positive_float, check_positive_int
from ..distributions import GeneralizedNormal
from ..nn import inverse_softplus


class DegeneratePriorWarning(UserWarning):
    """A learned prior is collapsing towards points (vanishing component scales)."""


class Prior(nn.Module):
    """Base class: ``distribution()`` over a latent vector of size ``latent_dim``.

    The built-in priors record their settings: ``spec`` is ``{"name": ..., **settings}``
    (without ``latent_dim``), which :func:`make_prior` and ``VAE(prior=...)`` accept.
    """

    _settings: dict | None = None

    def __init__(self, latent_dim: int, collapse_scale: float = 1e-2):
        super().__init__()
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.collapse_scale = check_positive_float(collapse_scale, "collapse_scale")
        self._warned = False

    def distribution(self) -> dist.Distribution:
        raise NotImplementedError

    @property
    def spec(self) -> dict:
        """``{"name": ..., **settings}``: what builds this prior again (given latent_dim).

        >>> GaussianMixturePrior(2, num_components=3).spec["num_components"]
        3
        """
        name = {cls: key for key, cls in PRIORS.items()} | {VampPrior: "vamp"}
        if type(self) not in name or self._settings is None:
            raise ValueError(f"{type(self).__name__} is not a built-in prior: it records no "
                             f"settings to be rebuilt from")
        return {"name": name[type(self)], **self._settings}

    def _check_scales(self, scales: torch.Tensor) -> None:
        """Warn (once per collapse) if a component's scale falls below ``collapse_scale``."""
        smallest = float(scales.detach().min())
        if smallest < self.collapse_scale and not self._warned:
            warnings.warn(
                f"{type(self).__name__} is collapsing: a component's scale is {smallest:.2e} "
                f"(< {self.collapse_scale}). Fitting a prior to the aggregate posterior has this "
                "degenerate solution (the prior shrinks onto points); bound its scales, use "
                "fewer components, or regularize it", DegeneratePriorWarning, stacklevel=3)
            self._warned = True
        elif smallest >= self.collapse_scale:
            self._warned = False


class StandardNormal(Prior):
    """r(z) = N(0, I).

    >>> StandardNormal(3).distribution().event_shape
    torch.Size([3])
    """

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        self._settings = {}
        self.register_buffer("_zero", torch.zeros(()))

    def distribution(self):
        zeros = self._zero.new_zeros(self.latent_dim)
        return dist.Normal(zeros, 1.0).to_event(1)


class GeneralizedNormalPrior(Prior):
    """r(z) = prod_i GeneralizedNormal(z_i; 0, scale, alpha), sparse for alpha < 1.

    >>> GeneralizedNormalPrior(4, alpha=0.7).distribution().event_shape
    torch.Size([4])
    """

    def __init__(self, latent_dim: int, alpha: float = 1.0, scale: float = 1.0):
        super().__init__(latent_dim)
        self.alpha = check_positive_float(alpha, "alpha")
        self.scale = check_positive_float(scale, "scale")
        self._settings = {"alpha": self.alpha, "scale": self.scale}
        self.register_buffer("_zero", torch.zeros(()))

    def distribution(self):
        zeros = self._zero.new_zeros(self.latent_dim)
        return GeneralizedNormal(zeros, self.scale, self.alpha).to_event(1)


class GaussianMixturePrior(Prior):
    """A learnable mixture of ``num_components`` diagonal Gaussians.

    >>> p = GaussianMixturePrior(2, num_components=5)
    >>> p.distribution().log_prob(torch.zeros(7, 2)).shape
    torch.Size([7])
    """

    def __init__(self, latent_dim: int, num_components: int = 10, init_spread: float = 1.0,
                 collapse_scale: float = 1e-2):
        super().__init__(latent_dim, collapse_scale)
        k = check_positive_int(num_components, "num_components")
        self._settings = {"num_components": k, "init_spread": float(init_spread),
                          "collapse_scale": self.collapse_scale}
        self.logits = nn.Parameter(torch.zeros(k))
        self.locs = nn.Parameter(check_positive_float(init_spread, "init_spread")
                                 * torch.randn(k, latent_dim))
        self.raw_scales = nn.Parameter(torch.full((k, latent_dim), inverse_softplus(1.0)))

    def distribution(self):
        scales = F.softplus(self.raw_scales) + 1e-6
        self._check_scales(scales)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits),
                                      dist.Normal(self.locs, scales).to_event(1))


class VampPrior(Prior):
    """The VampPrior: r(z) = (1/K) sum_k q(z | u_k), the guide's posterior at K learned
    pseudo-inputs u_k (Tomczak & Welling 2018). ``encode(x) -> (loc, scale)`` is the guide's
    encoder; the prior therefore shares the encoder's parameters.

    >>> from pyro_lvm.models import VAE
    >>> vae = VAE(8, 2, hidden=(4,))
    >>> p = VampPrior(2, vae.encode, data_dim=8, num_components=3)
    >>> p.distribution().event_shape
    torch.Size([2])
    """

    def __init__(self, latent_dim: int, encode: Callable, data_dim: int,
                 num_components: int = 50, collapse_scale: float = 1e-2):
        super().__init__(latent_dim, collapse_scale)
        self.encode = encode
        k = check_positive_int(num_components, "num_components")
        self._settings = {"num_components": k, "collapse_scale": self.collapse_scale}
        self.pseudo_inputs = nn.Parameter(0.5 + 0.1 * torch.randn(
            k, check_positive_int(data_dim, "data_dim")))

    def distribution(self):
        loc, scale = self.encode(self.pseudo_inputs)
        self._check_scales(scale)
        k = self.pseudo_inputs.shape[0]
        return dist.MixtureSameFamily(dist.Categorical(logits=loc.new_zeros(k)),
                                      dist.Normal(loc, scale).to_event(1))


class FlowPrior(Prior):
    """N(0, I) pushed through ``num_flows`` affine autoregressive transforms (Pyro's).

    >>> FlowPrior(3, num_flows=2).distribution().sample((4,)).shape
    torch.Size([4, 3])
    """

    def __init__(self, latent_dim: int, num_flows: int = 2, hidden: int | None = None):
        super().__init__(latent_dim)
        if latent_dim < 2:
            raise ValueError(f"FlowPrior needs latent_dim >= 2 (autoregressive), got "
                             f"{latent_dim}")
        self._settings = {"num_flows": num_flows, "hidden": hidden}
        hidden = [check_positive_int(hidden or 4 * latent_dim, "hidden")]
        self.flows = nn.ModuleList(affine_autoregressive(latent_dim, hidden_dims=hidden)
                                   for _ in range(check_positive_int(num_flows, "num_flows")))
        self.register_buffer("_zero", torch.zeros(()))

    def distribution(self):
        base = dist.Normal(self._zero.new_zeros(self.latent_dim), 1.0).to_event(1)
        return dist.TransformedDistribution(base, list(self.flows))


PRIORS = {"normal": StandardNormal, "mixture": GaussianMixturePrior, "flow": FlowPrior,
          "gennorm": GeneralizedNormalPrior}


def make_prior(prior, latent_dim: int) -> Prior:
    """A :class:`Prior` from a name ("normal", "mixture", "flow", "gennorm"), a spec
    (``{"name": ..., **settings}``, see :attr:`Prior.spec`), None (normal) or a Prior
    instance (returned as is; its latent_dim must match). The VampPrior needs the guide's
    encoder: build it yourself and pass the instance.

    >>> type(make_prior("mixture", 2)).__name__
    'GaussianMixturePrior'
    >>> make_prior({"name": "gennorm", "alpha": 0.5}, 3).alpha
    0.5
    """
    if isinstance(prior, dict):
        settings = dict(prior)
        name = settings.pop("name", None)
        if name not in PRIORS:
            raise ValueError(f"a prior spec needs 'name', one of {sorted(PRIORS)} (the "
                             f"VampPrior: VAE(prior={{'name': 'vamp', ...}})), got {prior!r}")
        return PRIORS[name](latent_dim, **settings)
    if prior is None:
        return StandardNormal(latent_dim)
    if isinstance(prior, Prior):
        if prior.latent_dim != latent_dim:
            raise ValueError(f"the prior has latent_dim={prior.latent_dim}, the model "
                             f"{latent_dim}")
        return prior
    if isinstance(prior, str) and prior in PRIORS:
        return PRIORS[prior](latent_dim)
    if prior == "vamp":
        raise ValueError("prior='vamp' needs the guide's encoder: pass "
                         "VampPrior(latent_dim, encode, data_dim) instead (VAE(prior='vamp') "
                         "builds one for you)")
    raise ValueError(f"prior must be one of {sorted(PRIORS) + ['vamp']} or a Prior, got "
                     f"{prior!r}")
