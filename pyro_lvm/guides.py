"""Guides for any model written as ``model(x)``: amortized and per-datapoint diagonal Normals.

Both discover the model's local latent sites (those inside the data plate) from a trace of
the model, as Pyro's AutoGuides do, and place a diagonal Normal on each site in unconstrained
space, pushed through ``biject_to(site.support)``.

- :class:`AmortizedNormal`: q(z|x) = N(mu_phi(x), diag sigma_phi(x)^2) from an MLP encoder
  (amortized inference, Kingma & Welling 2014).
- :class:`PerDatapointNormal`: free parameters (mu_n, sigma_n) for every training point
  (classical VI, e.g. Hoffman et al. 2013), indexed by the minibatch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import biject_to
from torch import nn

from ._checks import check_positive_float, check_positive_int
from .contract import data_frame, global_latent_message, run_traced, sample_sites
from .handlers import current_minibatch
from .models.settings import Recorded, check_dtype
from .nn import ACTIVATIONS, gaussian_head, inverse_softplus, mlp, register_module


@dataclass(frozen=True)
class LocalSite:
    """A latent site inside the data plate: its per-datapoint unconstrained shape and transform."""

    name: str
    shape: tuple[int, ...]          # unconstrained shape of one datapoint's block
    event_dim: int                  # event dims of the unconstrained base Normal
    transform: dist.transforms.Transform

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def local_latent_sites(model, x: torch.Tensor, data_plate: str = "data"):
    """Trace ``model(x)`` and return (local sites, plate dim, global latent site names).

    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         z = pyro.sample("z", dist.Normal(0., 1.).expand([3]).to_event(1))
    ...         pyro.sample("x", dist.Normal(z.sum(-1), 1.), obs=x)
    >>> sites, dim, globals_ = local_latent_sites(model, torch.zeros(4))
    >>> sites[0].name, sites[0].shape, dim, globals_
    ('z', (3,), -1, [])
    """
    with poutine.block():
        trace = run_traced(model, (x,), call="guide setup", role="model")
    sites, global_names, plate_dim = [], [], None
    for name, site in sample_sites(trace):
        if site["is_observed"]:
            continue
        frame = data_frame(site, data_plate)
        if frame is None:
            global_names.append(name)
            continue
        plate_dim = frame.dim
        fn = site["fn"]
        transform = biject_to(fn.support)
        unconstrained = transform.inv(site["value"])
        event_dim = fn.event_dim - transform.codomain.event_dim + transform.domain.event_dim
        pos = unconstrained.dim() - event_dim + plate_dim
        if pos != 0:
            raise ValueError(
                f"site {name!r} has shape {tuple(site['value'].shape)}: the data plate "
                f"{data_plate!r} must be its outermost dimension for a local guide"
            )
        sites.append(LocalSite(name, tuple(unconstrained.shape[1:]), event_dim, transform))
    if not sites:
        raise ValueError(
            f"the model has no latent sample site inside pyro.plate({data_plate!r}, ...): "
            "nothing for a local guide to infer"
        )
    return sites, plate_dim, global_names


def _is_identity(transform) -> bool:
    """Whether biject_to(support) is the identity (a real-valued site: no transform needed)."""
    while isinstance(transform, dist.transforms.IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, dist.transforms.ComposeTransform) and not transform.parts


class _LocalNormalGuide(Recorded, nn.Module):
    """Shared machinery: discover sites lazily, then sample a diagonal Normal per site.

    ``config`` holds the constructor's settings other than ``model`` (``type(g)(model,
    **g.config)`` builds the same guide, untrained). Once its parameters exist, the data must
    have their dtype.
    """

    def __init__(self, model, data_plate: str = "data", name: str = "guide"):
        super().__init__()
        self.model, self.data_plate, self.name = model, data_plate, name
        self.sites: list[LocalSite] | None = None

    def setup(self, x: torch.Tensor) -> None:
        """Discover the local latent sites of ``model(x)`` and create the parameters."""
        sites, plate_dim, global_names = local_latent_sites(self.model, x, self.data_plate)
        if global_names:
            raise ValueError(
                global_latent_message(type(self).__name__, global_names[0], self.data_plate)
                + f"; {type(self).__name__} covers only local latents (for the global ones "
                "combine it with an AutoGuide via AutoGuideList, and train with Trace_ELBO)")
        self.sites, self.plate_dim = sites, plate_dim
        self._create(x, sum(s.numel for s in sites))

    def _create(self, x: torch.Tensor, total: int) -> None:
        raise NotImplementedError

    def _loc_scale(self, x: torch.Tensor, idx: torch.Tensor):
        """(B, total) location and scale for the rows of x, whose data-set indices are idx."""
        raise NotImplementedError

    def _reference(self) -> torch.Tensor:
        """A parameter whose dtype the data must have."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.sites is None:
            self.setup(x)
        check_dtype(x, self._reference(), type(self).__name__)
        register_module(self.name, self)
        values = {}
        with pyro.plate(self.data_plate, x.shape[0], dim=self.plate_dim) as idx:
            loc, scale = self._loc_scale(x, idx)
            offset = 0
            for site in self.sites:
                sl = slice(offset, offset + site.numel)
                offset += site.numel
                shape = (x.shape[0], *site.shape)
                base = dist.Normal(loc[:, sl].reshape(shape), scale[:, sl].reshape(shape))
                fn = base.to_event(site.event_dim)
                if not _is_identity(site.transform):
                    fn = dist.TransformedDistribution(fn, site.transform)
                values[site.name] = pyro.sample(site.name, fn)
        return values


class AmortizedNormal(_LocalNormalGuide):
    """Amortized diagonal-Normal guide: an MLP maps each datapoint to (mu, sigma) of every
    local latent site of ``model``.

    Example:
        >>> from pyro_lvm.models import VAE
        >>> vae = VAE(64, 4, hidden=(16,))
        >>> guide = AmortizedNormal(vae.model, hidden=(32,))
        >>> guide(torch.rand(5, 64).bernoulli())["z"].shape
        torch.Size([5, 4])
    """

    def __init__(self, model, hidden: Sequence[int] = (200,), activation: str = "tanh",
                 init_scale: float = 0.1, data_plate: str = "data", name: str = "amortized"):
        super().__init__(model, data_plate, name)
        self.hidden = [check_positive_int(h, "hidden size") for h in hidden]
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.init_scale = check_positive_float(init_scale, "init_scale")
        self._record(hidden=self.hidden, activation=activation, init_scale=self.init_scale,
                     data_plate=data_plate, name=name)

    def _create(self, x, total):
        data_dim = math.prod(x.shape[1:])
        self.encoder = mlp([data_dim, *self.hidden, 2 * total], self.activation).to(x)
        with torch.no_grad():  # start near N(0, init_scale^2): small means, fixed scales
            last = self.encoder[-1]
            last.weight.mul_(0.1)
            last.bias.zero_()
            last.bias[total:] = inverse_softplus(self.init_scale)

    def _loc_scale(self, x, idx):
        return gaussian_head(self.encoder(x.reshape(x.shape[0], -1)), min_scale=1e-5)

    def _reference(self):
        return self.encoder[0].weight


class PerDatapointNormal(_LocalNormalGuide):
    """Classical (non-amortized) VI: free (mu_n, sigma_n) for each of ``num_data`` training
    points, selected by the data plate's subsample indices.

    Under :func:`pyro_lvm.infer.fit` (or the :class:`pyro_lvm.handlers.minibatch` handler) the
    data plate carries the minibatch's row indices, so the right parameters are used. Called
    directly, ``x`` must be the whole training set.

    Example:
        >>> from pyro_lvm.models import VAE
        >>> vae = VAE(64, 4, hidden=(16,))
        >>> guide = PerDatapointNormal(vae.model, num_data=10)
        >>> guide(torch.rand(10, 64).bernoulli())["z"].shape
        torch.Size([10, 4])
    """

    def __init__(self, model, num_data: int, init_scale: float = 0.1, data_plate: str = "data",
                 name: str = "per_datapoint"):
        super().__init__(model, data_plate, name)
        self.num_data = check_positive_int(num_data, "num_data")
        self.init_scale = check_positive_float(init_scale, "init_scale")
        self._record(num_data=self.num_data, init_scale=self.init_scale,
                     data_plate=data_plate, name=name)

    def _create(self, x, total):
        self.loc = nn.Parameter(x.new_zeros(self.num_data, total))
        raw = inverse_softplus(self.init_scale)
        self.raw_scale = nn.Parameter(x.new_full((self.num_data, total), raw))

    def _reference(self):
        return self.loc

    def _loc_scale(self, x, idx):
        batch = current_minibatch(self.data_plate)
        if batch is None and x.shape[0] != self.num_data:
            raise ValueError(
                f"{type(self).__name__} holds parameters for num_data={self.num_data} points "
                f"but got {x.shape[0]} rows outside a minibatch handler; pass the whole "
                "training set, or train with pyro_lvm.infer.fit"
            )
        if batch is not None and batch.num_data != self.num_data:
            raise ValueError(
                f"{type(self).__name__} holds parameters for the num_data={self.num_data} "
                f"training points but was called on a data set of {batch.num_data}: classical "
                "VI has no posterior for new data until it is fitted to them"
            )
        if int(idx.max()) >= self.num_data:
            raise ValueError(
                f"minibatch index {int(idx.max())} is out of range for "
                f"num_data={self.num_data}"
            )
        return self.loc[idx], F.softplus(self.raw_scale[idx]) + 1e-5
