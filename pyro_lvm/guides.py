"""Guides for any model written as ``model(x)``: three families, amortized or per datapoint.

Every guide discovers the model's local latent sites (those inside the data plate) from a
trace of the model, as Pyro's AutoGuides do, and places a distribution on each site in
unconstrained space, pushed through ``biject_to(site.support)``. A guide is a *family* of
distributions indexed by parameters lambda (a vector per datapoint) and a way to get lambda:

- families: :class:`DiagonalNormalFamily` (N(mu, diag sigma^2)); :class:`MultivariateNormalFamily`
  (full covariance through a Cholesky factor, per site); :class:`FlowFamily` (a conditional
  normalizing flow: Pyro's affine- or spline-autoregressive transforms conditioned on a context
  vector, then mu + sigma * ., Rezende & Mohamed 2015; Kingma et al. 2016);
- amortized (an MLP encoder maps x_n to lambda_n, Kingma & Welling 2014): :class:`AmortizedNormal`,
  :class:`AmortizedMultivariateNormal`, :class:`AmortizedFlow`;
- per datapoint (free lambda_n for every training point, classical VI, Hoffman et al. 2013):
  :class:`PerDatapointNormal`, :class:`PerDatapointMultivariateNormal`, :class:`PerDatapointFlow`.

``guide.family`` and ``guide.family_params(x, idx)`` expose lambda, so that a diagnostic can ask
for the best member of the same family for each datapoint
(:func:`pyro_lvm.diagnostics.inference_gaps`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
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

__all__ = [
    "FLOWS",
    "AmortizedFlow",
    "AmortizedGuide",
    "AmortizedMultivariateNormal",
    "AmortizedNormal",
    "DiagonalNormalFamily",
    "FlowFamily",
    "LocalSite",
    "MultivariateNormalFamily",
    "PerDatapointFlow",
    "PerDatapointGuide",
    "PerDatapointMultivariateNormal",
    "PerDatapointNormal",
    "local_latent_sites",
    "lower_cholesky",
]


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


class _Family(nn.Module):
    """How a vector lambda of ``num_params`` numbers per datapoint gives every local site's
    distribution (in the site's constrained space)."""

    def __init__(self, sites: list[LocalSite]):
        super().__init__()
        self.sites = sites
        self.total = sum(site.numel for site in sites)

    num_params: int

    def initial(self, init_scale: float, like: torch.Tensor) -> torch.Tensor:
        """The lambda of a standard start: locations 0, scales ``init_scale``."""
        raise NotImplementedError

    def distributions(self, lam: torch.Tensor) -> dict[str, dist.Distribution]:
        """{site name: its distribution, batched over the rows of ``lam``}."""
        raise NotImplementedError

    def _constrained(self, site: LocalSite, fn):
        return fn if _is_identity(site.transform) else dist.TransformedDistribution(
            fn, site.transform)


def _slices(sizes):
    offset = 0
    for size in sizes:
        yield slice(offset, offset + size)
        offset += size


class DiagonalNormalFamily(_Family):
    """lambda = (mu, raw sigma) of every site, sigma = softplus(raw) + 1e-5.

    >>> from torch.distributions import constraints
    >>> fam = DiagonalNormalFamily([LocalSite("z", (2,), 1, biject_to(constraints.real))])
    >>> fam.distributions(fam.initial(0.1, torch.zeros(1)).expand(3, -1))["z"].batch_shape
    torch.Size([3])
    """

    MIN_SCALE = 1e-5

    def __init__(self, sites):
        super().__init__(sites)
        self.num_params = 2 * self.total

    def initial(self, init_scale, like):
        return torch.cat([like.new_zeros(self.total),
                          like.new_full((self.total,), inverse_softplus(init_scale))])

    def distributions(self, lam):
        loc, scale = gaussian_head(lam, min_scale=self.MIN_SCALE)
        out = {}
        for site, sl in zip(self.sites, _slices(s.numel for s in self.sites), strict=True):
            shape = (lam.shape[0], *site.shape)
            base = dist.Normal(loc[:, sl].reshape(shape), scale[:, sl].reshape(shape))
            out[site.name] = self._constrained(site, base.to_event(site.event_dim))
        return out


def _event_split(site: LocalSite) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(batch part, event part) of a site's per-datapoint shape."""
    cut = len(site.shape) - site.event_dim
    return site.shape[:cut], site.shape[cut:]


def lower_cholesky(diagonal: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """The (..., k, k) lower-triangular factor with ``diagonal`` (..., k) on its diagonal and
    ``lower`` (..., k(k-1)/2) below it, row by row (``torch.tril_indices`` order).

    >>> lower_cholesky(torch.tensor([1.0, 2.0]), torch.tensor([3.0])).tolist()
    [[1.0, 0.0], [3.0, 2.0]]
    """
    k = diagonal.shape[-1]
    rows, cols = torch.tril_indices(k, k, -1, device=diagonal.device)
    tril = torch.diag_embed(diagonal).clone()
    tril[..., rows, cols] = lower
    return tril


class MultivariateNormalFamily(_Family):
    """lambda = per site: mu, the raw diagonal (softplus + 1e-5) and the strictly lower
    triangle of a Cholesky factor L, q = N(mu, L L^T) over each site's event (a site with
    scalar events, or one value, is a diagonal Normal). Correlations within a site, not
    across sites.

    >>> from torch.distributions import constraints
    >>> fam = MultivariateNormalFamily([LocalSite("z", (3,), 1, biject_to(constraints.real))])
    >>> fam.num_params, type(fam.distributions(torch.zeros(2, 9))["z"]).__name__  # 3 + 3 + 3
    (9, 'MultivariateNormal')
    """

    def __init__(self, sites):
        super().__init__(sites)
        self.layout = []
        for site in sites:
            batch, event = _event_split(site)
            k, b = math.prod(event), math.prod(batch)
            self.layout.append((b, k, b * k * (k - 1) // 2))
        self.num_params = sum(2 * b * k + off for b, k, off in self.layout)

    def initial(self, init_scale, like):
        parts = []
        for b, k, off in self.layout:
            parts += [like.new_zeros(b * k), like.new_full((b * k,), inverse_softplus(init_scale)),
                      like.new_zeros(off)]
        return torch.cat(parts)

    def distributions(self, lam):
        out, n = {}, lam.shape[0]
        sizes = [size for b, k, off in self.layout for size in (b * k, b * k, off)]
        chunks = [lam[:, sl] for sl in _slices(sizes)]
        for i, site in enumerate(self.sites):
            b, k, _ = self.layout[i]
            loc, raw, off = chunks[3 * i:3 * i + 3]
            batch, event = _event_split(site)
            scale = F.softplus(raw) + DiagonalNormalFamily.MIN_SCALE
            if k == 1:
                shape = (n, *site.shape)
                fn = dist.Normal(loc.reshape(shape), scale.reshape(shape)).to_event(site.event_dim)
            else:
                tril = lower_cholesky(scale.reshape(n, b, k), off.reshape(n, b, -1))
                fn = dist.MultivariateNormal(loc.reshape(n, *batch, k),
                                             scale_tril=tril.reshape(n, *batch, k, k))
                if len(event) > 1:
                    fn = dist.TransformedDistribution(
                        fn, dist.transforms.ReshapeTransform((k,), event))
            out[site.name] = self._constrained(site, fn)
        return out


#: The conditional transforms of :class:`FlowFamily` (Pyro's helpers).
FLOWS = ("autoregressive", "spline")


class FlowFamily(_Family):
    """lambda = (mu, raw sigma, context c) per datapoint; each site's value is
    mu + sigma * f_c(u), u ~ N(0, I), where f_c is ``num_flows`` conditional autoregressive
    transforms (Pyro's ``conditional_affine_autoregressive`` or
    ``conditional_spline_autoregressive``, with reversing permutations between them)
    conditioned on c: a diagonal Normal when f is the identity, and any smooth density as
    the flow grows. The transforms' weights are shared by all datapoints; c is what varies.
    Each hidden layer of the transforms' networks is widened to the site's size where it is
    narrower (Pyro's autoregressive networks need it).

    >>> from torch.distributions import constraints
    >>> fam = FlowFamily([LocalSite("z", (2,), 1, biject_to(constraints.real))], 3)
    >>> d = fam.distributions(torch.zeros(4, fam.num_params))["z"]
    >>> d.rsample().shape
    torch.Size([4, 2])
    """

    def __init__(self, sites, context_dim: int = 8, num_flows: int = 2,
                 flow: str = "autoregressive", hidden: Sequence[int] = (32,)):
        super().__init__(sites)
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
        self.context_dim = check_positive_int(context_dim, "context_dim")
        self.num_params = 2 * self.total + self.context_dim
        self.transforms = nn.ModuleList()
        self.event_shapes = []
        for site in sites:
            batch, event = _event_split(site)
            if batch:
                raise ValueError(
                    f"FlowFamily: site {site.name!r} has dimensions {batch} inside the data "
                    "plate that are not part of its event (a nested plate); a flow needs "
                    "one event vector per datapoint: use AmortizedMultivariateNormal")
            k = site.numel
            # Pyro's autoregressive networks need hidden layers at least as wide as the input
            widths = [max(check_positive_int(h, "flow hidden size"), k) for h in hidden]
            layers = nn.ModuleList()
            for _ in range(check_positive_int(num_flows, "num_flows")):
                if k == 1:  # nothing to be autoregressive over: an elementwise spline
                    layers.append(T.conditional_spline(1, self.context_dim, widths))
                elif flow == "autoregressive":
                    layers.append(T.conditional_affine_autoregressive(
                        k, self.context_dim, hidden_dims=widths))
                else:
                    layers.append(T.conditional_spline_autoregressive(
                        k, self.context_dim, hidden_dims=widths))
            self.transforms.append(layers)
            self.event_shapes.append(event)

    def initial(self, init_scale, like):
        return torch.cat([like.new_zeros(self.total),
                          like.new_full((self.total,), inverse_softplus(init_scale)),
                          like.new_zeros(self.context_dim)])

    def distributions(self, lam):
        n = lam.shape[0]
        loc, scale = gaussian_head(lam[:, :2 * self.total], DiagonalNormalFamily.MIN_SCALE)
        context = lam[:, 2 * self.total:]
        out = {}
        for i, (site, sl) in enumerate(zip(self.sites, _slices(s.numel for s in self.sites),
                                           strict=True)):
            k, event = site.numel, self.event_shapes[i]
            parts = []
            for j, layer in enumerate(self.transforms[i]):
                if j and k > 1:
                    parts.append(T.Permute(torch.arange(k - 1, -1, -1, device=lam.device)))
                parts.append(layer.condition(context))
            parts.append(T.AffineTransform(loc[:, sl], scale[:, sl], event_dim=1))
            if event != (k,):
                parts.append(T.ReshapeTransform((k,), event))
            base = dist.Normal(lam.new_zeros(n, k), 1.0).to_event(1)
            out[site.name] = self._constrained(site, dist.TransformedDistribution(base, parts))
        return out


class _LocalGuide(Recorded, nn.Module):
    """Shared machinery: discover the sites lazily, build the family and the way to lambda,
    then sample every site from ``family.distributions(lambda)``.

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
        self.family = self._make_family(sites).to(x)
        self._create(x, self.family.num_params)

    def _make_family(self, sites) -> _Family:
        raise NotImplementedError

    def _create(self, x: torch.Tensor, num_params: int) -> None:
        raise NotImplementedError

    def family_params(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """lambda (B, family.num_params) for the rows of x, whose data-set indices are idx."""
        raise NotImplementedError

    def _reference(self) -> torch.Tensor:
        """A parameter whose dtype the data must have."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.sites is None:
            self.setup(x)
        check_dtype(x, self._reference(), type(self).__name__)
        register_module(self.name, self)
        with pyro.plate(self.data_plate, x.shape[0], dim=self.plate_dim) as idx:
            fns = self.family.distributions(self.family_params(x, idx))
            return {site.name: pyro.sample(site.name, fns[site.name]) for site in self.sites}


class AmortizedGuide(_LocalGuide):
    """An MLP encoder maps each datapoint to lambda; its last layer starts at lambda's
    standard start (small weights, bias = ``family.initial(init_scale)``)."""

    def __init__(self, model, hidden: Sequence[int] = (200,), activation: str = "tanh",
                 init_scale: float = 0.1, data_plate: str = "data", name: str = "amortized",
                 **settings):
        super().__init__(model, data_plate, name)
        self.hidden = [check_positive_int(h, "hidden size") for h in hidden]
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.init_scale = check_positive_float(init_scale, "init_scale")
        self._record(hidden=self.hidden, activation=activation, init_scale=self.init_scale,
                     data_plate=data_plate, name=name, **settings)

    def _create(self, x, num_params):
        data_dim = math.prod(x.shape[1:])
        self.encoder = mlp([data_dim, *self.hidden, num_params], self.activation).to(x)
        with torch.no_grad():  # start near the family's standard start: small means, fixed scales
            last = self.encoder[-1]
            last.weight.mul_(0.1)
            last.bias.copy_(self.family.initial(self.init_scale, last.bias))

    def family_params(self, x, idx):
        return self.encoder(x.reshape(x.shape[0], -1))

    def _reference(self):
        return self.encoder[0].weight


class PerDatapointGuide(_LocalGuide):
    """Free lambda_n for each of ``num_data`` training points, selected by the data plate's
    subsample indices (under :func:`pyro_lvm.infer.fit` or the minibatch handler the plate
    carries the minibatch's row indices; called directly, ``x`` must be the whole training
    set)."""

    def __init__(self, model, num_data: int, init_scale: float = 0.1, data_plate: str = "data",
                 name: str = "per_datapoint", **settings):
        super().__init__(model, data_plate, name)
        self.num_data = check_positive_int(num_data, "num_data")
        self.init_scale = check_positive_float(init_scale, "init_scale")
        self._record(num_data=self.num_data, init_scale=self.init_scale,
                     data_plate=data_plate, name=name, **settings)

    def _create(self, x, num_params):
        start = self.family.initial(self.init_scale, x.new_zeros(()))
        self.params = nn.Parameter(start.expand(self.num_data, -1).clone())

    def _reference(self):
        return self.params

    def _rows(self, x, idx):
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
        return idx

    def family_params(self, x, idx):
        return self.params[self._rows(x, idx)]


class AmortizedNormal(AmortizedGuide):
    """Amortized diagonal-Normal guide: an MLP maps each datapoint to (mu, sigma) of every
    local latent site of ``model``.

    Example:
        >>> from pyro_lvm.models import VAE
        >>> vae = VAE(64, 4, hidden=(16,))
        >>> guide = AmortizedNormal(vae.model, hidden=(32,))
        >>> guide(torch.rand(5, 64).bernoulli())["z"].shape
        torch.Size([5, 4])
    """

    def _make_family(self, sites):
        return DiagonalNormalFamily(sites)


class AmortizedMultivariateNormal(AmortizedGuide):
    """Amortized full-covariance Normal guide: an MLP maps each datapoint to the mean and the
    Cholesky factor of every local site's covariance (:class:`MultivariateNormalFamily`).

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(6, 3)
        >>> guide = AmortizedMultivariateNormal(ppca.model, hidden=(16,))
        >>> type(pyro.poutine.trace(guide).get_trace(ppca.sample(4)).nodes["z"]["fn"]).__name__
        'MultivariateNormal'
    """

    def _make_family(self, sites):
        return MultivariateNormalFamily(sites)


class AmortizedFlow(AmortizedGuide):
    """Amortized normalizing-flow guide: an MLP maps each datapoint to (mu, sigma, context),
    and ``num_flows`` conditional autoregressive transforms shape the density
    (:class:`FlowFamily`; ``flow`` "autoregressive" or "spline").

    Drawing z and its log-density is one pass per transform; the density at *other* points
    (the aggregate posterior, :func:`~pyro_lvm.diagnostics.information`) inverts the flow,
    one network pass per coordinate of the site, for every (point, datapoint) pair: keep
    those diagnostics to modest numbers of rows and latent sizes.

    Example:
        >>> from pyro_lvm.models import VAE
        >>> vae = VAE(64, 4, hidden=(16,))
        >>> guide = AmortizedFlow(vae.model, hidden=(32,), context_dim=4)
        >>> guide(torch.rand(5, 64).bernoulli())["z"].shape
        torch.Size([5, 4])
    """

    def __init__(self, model, hidden: Sequence[int] = (200,), activation: str = "tanh",
                 init_scale: float = 0.1, context_dim: int = 8, num_flows: int = 2,
                 flow: str = "autoregressive", flow_hidden: Sequence[int] = (32,),
                 data_plate: str = "data", name: str = "amortized_flow"):
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
        self._flow = {"context_dim": context_dim, "num_flows": num_flows, "flow": flow,
                      "hidden": list(flow_hidden)}
        super().__init__(model, hidden, activation, init_scale, data_plate, name,
                         context_dim=context_dim, num_flows=num_flows, flow=flow,
                         flow_hidden=list(flow_hidden))

    def _make_family(self, sites):
        return FlowFamily(sites, **self._flow)


class PerDatapointNormal(PerDatapointGuide):
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

    def _make_family(self, sites):
        return DiagonalNormalFamily(sites)

    def _create(self, x, num_params):  # two tables, loc and raw_scale (their saved names)
        total = num_params // 2
        self.loc = nn.Parameter(x.new_zeros(self.num_data, total))
        raw = inverse_softplus(self.init_scale)
        self.raw_scale = nn.Parameter(x.new_full((self.num_data, total), raw))

    def _reference(self):
        return self.loc

    def family_params(self, x, idx):
        idx = self._rows(x, idx)
        return torch.cat([self.loc[idx], self.raw_scale[idx]], -1)


class PerDatapointMultivariateNormal(PerDatapointGuide):
    """Classical VI with a full-covariance Normal per training point
    (:class:`MultivariateNormalFamily`).

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(6, 3)
        >>> guide = PerDatapointMultivariateNormal(ppca.model, num_data=4)
        >>> guide(ppca.sample(4))["z"].shape
        torch.Size([4, 3])
    """

    def _make_family(self, sites):
        return MultivariateNormalFamily(sites)


class PerDatapointFlow(PerDatapointGuide):
    """Classical VI with a flow per training point: free (mu_n, sigma_n, context_n), shared
    transforms (:class:`FlowFamily`).

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(6, 3)
        >>> guide = PerDatapointFlow(ppca.model, num_data=4, context_dim=2)
        >>> guide(ppca.sample(4))["z"].shape
        torch.Size([4, 3])
    """

    def __init__(self, model, num_data: int, init_scale: float = 0.1, context_dim: int = 8,
                 num_flows: int = 2, flow: str = "autoregressive",
                 flow_hidden: Sequence[int] = (32,), data_plate: str = "data",
                 name: str = "per_datapoint_flow"):
        if flow not in FLOWS:
            raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
        self._flow = {"context_dim": context_dim, "num_flows": num_flows, "flow": flow,
                      "hidden": list(flow_hidden)}
        super().__init__(model, num_data, init_scale, data_plate, name,
                         context_dim=context_dim, num_flows=num_flows, flow=flow,
                         flow_hidden=list(flow_hidden))

    def _make_family(self, sites):
        return FlowFamily(sites, **self._flow)
