"""The aggregate posterior q(z) = (1/N) sum_n q(z | x_n) of a guide over a data set.

Hoffman & Johnson (2016, "ELBO surgery") and the texts behind this library: a model fitted by
maximum likelihood matches the data's marginal, but nothing forces q(z) to equal the prior
(the regularizer r(z)); their gap is a diagnostic of the fit. z is one datapoint's latents
(all selected local sites, flattened and concatenated). :meth:`AggregatePosterior.from_guide`
returns the member of this family that fits the guide:

- :class:`DiagonalNormalAggregatePosterior`: every site a diagonal Normal; pairwise
  log-densities as matrix products, and each coordinate's 1-D marginal mixture;
- :class:`MixtureAggregatePosterior`: per-datapoint distributions of any other family,
  evaluated through their ``log_prob``;
- :class:`ConditionedAggregatePosterior`: a hierarchical guide (a site depends on another
  latent), q(z | x_n) of all sites jointly, evaluated by running the guide conditioned on z;
- :class:`SampleAggregatePosterior`: a guide without a density (Delta, as in MAP): draws only.

Every density is the exact N-component mixture, streamed in chunks by one
:func:`mixture_log_mean_exp`.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as dist
import pyro.poutine as poutine
import torch

from .._checks import check_positive_int
from ..contract import (
    PairError,
    auxiliary_roles,
    data_frame,
    eval_mode,
    extra_site_message,
    global_latent_message,
    guide_dependencies,
    pair_sites,
    rows_for,
    run_traced,
    sample_sites,
    trial,
)
from ..handlers import map_chunks, minibatch, simulate
from ..infer.particles import REMEDY, VectorizationWarning


@dataclass(frozen=True)
class SiteBlock:
    """Where a latent site lives in the flattened z of one datapoint: columns ``start:stop``
    hold its per-datapoint value of shape ``shape``, flattened.

    >>> b = SiteBlock("z", (2, 3), 0, 6)
    >>> b.stop - b.start == math.prod(b.shape)
    True
    """

    name: str
    shape: tuple[int, ...]   # per-datapoint value shape
    start: int
    stop: int
    dtype: torch.dtype = torch.float32  # the site's own (a Categorical's draws are integers)


#: Shifted log-terms v - max below this are raised to it before the exp of a streamed
#: log-sum-exp (see :func:`mixture_log_mean_exp`): exp stays in its fast range (this torch
#: build's exp is 12-35x slower below about -88 in float32, and below -708 in float64).
LOG_TERM_FLOOR = -80.0


#: Bytes of one (points, components, D) block of a mixture evaluation that builds per-pair
#: D-vectors (the per-coordinate marginals; log q(z) when its components are not diagonal
#: Normals) when ``chunk_size`` is None: at D = 512 in float32, 128 x 128 points x components.
BLOCK_BUDGET = 32 * 2**20


def block_chunk(chunk_size: int | None, dim: int, itemsize: int = 4) -> int:
    """Points (and components) per block of a (chunk, chunk, D) mixture evaluation:
    ``chunk_size``, or the most whose block fits :data:`BLOCK_BUDGET` (at least 1, at most
    1024), so that memory depends on neither N nor, beyond the budget, D.

    >>> block_chunk(None, 512), block_chunk(None, 2), block_chunk(64, 512)
    (128, 1024, 64)
    """
    if chunk_size is not None:
        return check_positive_int(chunk_size, "chunk_size")
    return max(1, min(1024, math.isqrt(BLOCK_BUDGET // (itemsize * max(1, dim)))))


def mixture_log_mean_exp(pairwise: Callable, z: torch.Tensor, num_components: int,
                         chunk_size: int = 1024,
                         exclude: torch.Tensor | None = None) -> torch.Tensor:
    """log (1/N) sum_n exp(pairwise(z_j, n)) for each row z_j of ``z``: the log-density of an
    equally weighted N-component mixture such as the aggregate posterior (Hoffman & Johnson
    2016), streamed over ``chunk_size`` points times ``chunk_size`` components at a time so
    that memory stays bounded whatever M and N.

    ``pairwise(z_chunk, rows)`` gives the components' log-densities, (m, r, *event) for the m
    points and the components ``rows`` (indices); the result is (M, *event). ``exclude[j] = n``
    leaves component n out of point j's mixture (the average is then over N - 1 components):
    the leave-one-out estimate for a point drawn from component n itself.

    Each chunk's log-sum-exp is m + log sum_n exp(max(v_n - m, LOG_TERM_FLOOR)), m the
    largest v_n kept: a term below e^-80 relative to m counts as e^-80 (which keeps exp out
    of its slow range), so the sum over all N components, whose largest term is at least
    e^m, grows by at most N e^-80 = N 1.8e-35 relatively. For any N below 10^18 that is under
    float64's rounding (1.1e-16): the result is the exact logsumexp (far within 1e-6
    relative).

    >>> lp = torch.randn(5, 7)              # log q(z_j | x_n): 5 points, 7 components
    >>> points = torch.arange(5)[:, None]   # here a point is its row of lp
    >>> out = mixture_log_mean_exp(lambda z, rows: lp[z[:, 0]][:, rows], points, 7, 3)
    >>> torch.allclose(out, lp.logsumexp(1) - math.log(7))
    True
    """
    return _stream_log_mean_exp(pairwise, z, num_components,
                                check_positive_int(chunk_size, "chunk_size"), exclude)


def _stream_log_mean_exp(pairwise: Callable, z: torch.Tensor, num_components: int,
                         chunk_size: int, exclude: torch.Tensor | None,
                         prepare: Callable | None = None) -> torch.Tensor:
    """:func:`mixture_log_mean_exp`. With ``prepare`` (this module's own fast path),
    ``pairwise(prepare(z_chunk), rows)`` takes ``rows`` as a slice and returns a tensor of its
    own, changed in place here (no copies)."""
    out = []
    for a in range(0, z.shape[0], chunk_size):
        acc = None
        ex = (None if exclude is None
              else exclude[a:a + chunk_size].to(device=z.device, dtype=torch.long))
        points = z[a:a + chunk_size] if prepare is None else prepare(z[a:a + chunk_size])
        for b in range(0, num_components, chunk_size):
            stop = min(b + chunk_size, num_components)
            lp = pairwise(points, torch.arange(b, stop, device=z.device) if prepare is None
                          else slice(b, stop))
            if ex is not None:  # component ex[j] out of point j's sum: before the max
                hit = ((ex >= b) & (ex < stop)).nonzero().squeeze(1)
                if len(hit):
                    index, inf = (hit, ex[hit] - b), lp.new_tensor(-math.inf)
                    lp = lp.index_put(index, inf) if prepare is None else lp.index_put_(index,
                                                                                       inf)
            part = _log_sum_exp(lp, in_place=prepare is not None)
            acc = part if acc is None else torch.logaddexp(acc, part)
        out.append(acc)
    count = num_components - (0 if exclude is None else 1)
    return torch.cat(out) - math.log(count)


def _log_sum_exp(lp: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """logsumexp over dim 1 with the shifted terms clamped at ``LOG_TERM_FLOOR`` (see
    :func:`mixture_log_mean_exp`); rows of -inf give -inf, a nan gives nan, as logsumexp."""
    top = lp.detach().amax(1, keepdim=True)
    shift = top.masked_fill(~torch.isfinite(top), 0.0)
    if torch.is_grad_enabled() and lp.requires_grad:
        terms = (lp - shift).clamp_min(LOG_TERM_FLOOR).exp()
    else:  # one allocation at most: the rest in place
        terms = (lp.sub_(shift) if in_place else lp - shift).clamp_min_(LOG_TERM_FLOOR).exp_()
    return top.squeeze(1) + terms.sum(1).log()


class AggregatePosterior(ABC):
    """The mixture q(z) = (1/N) sum_n q(z | x_n) of a guide's local posteriors (Hoffman &
    Johnson 2016): what every member of the family offers.

    Build it with :meth:`from_guide`, which returns the subclass that fits the guide. z is one
    datapoint's latent vector: the selected sites, flattened and concatenated in ``blocks``
    order. ``log_prob`` is the exact mixture density, streamed over chunks of evaluation
    points and of components (:func:`mixture_log_mean_exp`).

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> x = ppca.sample(500)
        >>> q = AggregatePosterior.from_guide(ppca.exact_posterior, x)
        >>> q.sample(7).shape, q.log_prob(torch.zeros(3, 2)).shape
        (torch.Size([7, 2]), torch.Size([3]))
    """

    is_diagonal_normal = False  # whether the diagonal-Normal fast path is in use

    @property
    def has_marginals(self) -> bool:
        """Whether :meth:`marginal_log_prob` (each coordinate's 1-D marginal mixture) is
        available: components whose coordinates have known 1-D marginals (diagonal or
        full-covariance Normals, independent coordinates of any scalar family)."""
        return False

    def __init__(self, blocks: list[SiteBlock], num_data: int):
        self.blocks = blocks
        self.num_data = num_data
        self.dim = blocks[-1].stop

    @classmethod
    def from_guide(cls, guide, data, sites=None, data_plate: str = "data",
                   batch_size: int = 1024, model=None) -> AggregatePosterior:
        """Run ``guide`` over ``data`` in chunks and collect every q(z | x_n).

        The default sites are the guide's local latents, less auxiliary draws that a Delta
        site transforms (AutoNormal's ``z_unconstrained``: z is the latent); a site marked
        ``is_auxiliary`` that no Delta site depends on is refused. With ``model`` (the model
        the guide belongs to), the pair is checked first: guide sites the model does not
        have, and global latents, are refused by name (without it, every local guide site
        is taken to be a latent of the model).

        The guide runs with every nn.Module in eval mode. The first chunk decides the class:
        :class:`SampleAggregatePosterior` (draws only) when a site's guide distribution has no
        usable density (a Delta, as in MAP); :class:`ConditionedAggregatePosterior` when a
        site depends on another latent and every local site is selected (a site depending on
        one that is not selected is refused with an error naming it: its q(z | x_n) is not
        one distribution per datapoint); :class:`DiagonalNormalAggregatePosterior` when every
        site is a diagonal Normal; else :class:`MixtureAggregatePosterior`.

        >>> from pyro_lvm.models import VAE
        >>> vae = VAE(8, 2, hidden=(4,))
        >>> type(AggregatePosterior.from_guide(vae.guide, torch.zeros(10, 8))).__name__
        'DiagonalNormalAggregatePosterior'
        """
        return _from_guide(guide, rows_for(data, guide), sites, data_plate,
                           check_positive_int(batch_size, "batch_size"), model)

    # -- density ---------------------------------------------------------------------------
    @abstractmethod
    def pairwise_log_prob(self, z: torch.Tensor,
                          rows: slice | torch.Tensor | None = None) -> torch.Tensor:
        """log q(z_j | x_n) for every evaluation point j and component n in ``rows``: (M, R).

        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> q = AggregatePosterior.from_guide(ppca.exact_posterior, ppca.sample(10))
        >>> q.pairwise_log_prob(torch.zeros(3, 2)).shape
        torch.Size([3, 10])
        """

    def log_prob(self, z: torch.Tensor, chunk_size: int | None = None,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
        """log q(z) = logsumexp_n log q(z | x_n) - log N for each row of z, shape (M,).

        Streamed over ``chunk_size`` evaluation points times ``chunk_size`` components at a
        time (None: :func:`block_chunk`'s, sized by D; diagonal Normals: 1024).
        ``exclude[j] = n`` leaves component n out of point j's mixture (then the average is
        over N - 1 components): the leave-one-out estimate for a point drawn from
        q(z | x_n) itself, which removes the upward bias of its own component.

        >>> from pyro_lvm.models import PPCA
        >>> q = AggregatePosterior.from_guide(PPCA(4, 2).exact_posterior, torch.zeros(5, 4))
        >>> q.log_prob(torch.zeros(3, 2), exclude=torch.tensor([0, 1, 2])).shape
        torch.Size([3])
        """
        z = self._check_points(z)
        return mixture_log_mean_exp(self.pairwise_log_prob, z, self.num_data,
                                    block_chunk(chunk_size, self.dim, z.element_size()),
                                    exclude)

    def marginal_log_prob(self, z: torch.Tensor, chunk_size: int | None = None,
                          exclude: torch.Tensor | None = None) -> torch.Tensor:
        """log q(z_i) of each coordinate's 1-D marginal mixture, shape (M, D): only where
        :attr:`has_marginals`. Streamed as :meth:`log_prob` (None: :func:`block_chunk`'s
        chunk, sized by D)."""
        raise ValueError("per-coordinate marginals need components whose coordinates have "
                         "known 1-D marginals (Normal, MultivariateNormal, or independent "
                         "coordinates of a scalar distribution); this guide's have none")

    # -- draws and moments -----------------------------------------------------------------
    @abstractmethod
    def sample(self, num_samples: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws from the mixture, (num_samples, D): a uniformly chosen component, then a
        draw from it. ``generator`` makes the diagonal-Normal path reproducible; the other
        paths draw from the guide's distributions with the global RNG.

        >>> from pyro_lvm.models import PPCA
        >>> q = AggregatePosterior.from_guide(PPCA(4, 2).exact_posterior, torch.zeros(5, 4))
        >>> q.sample(12).shape
        torch.Size([12, 2])
        """

    @property
    @abstractmethod
    def component_means(self) -> torch.Tensor:
        """E_q[z | x_n] for every datapoint, (N, D)."""

    @property
    def mean(self) -> torch.Tensor:
        """E_q[z] = mean_n E_q[z | x_n]."""
        return self.component_means.mean(0)

    @property
    def covariance(self) -> torch.Tensor:
        """Cov_q[z] = mean_n Cov_q[z | x_n] + Cov_n(E_q[z | x_n]) (law of total covariance);
        estimated from draws where the components have no analytic covariance."""
        between = torch.cov(self.component_means.T, correction=0).reshape(self.dim, self.dim)
        within = self._within_covariance(between)
        return self._covariance_of_draws() if within is None else within + between

    def _within_covariance(self, like: torch.Tensor) -> torch.Tensor | None:
        """mean_n Cov_q[z | x_n], (D, D), or None where there is no analytic one."""
        return None

    def _covariance_of_draws(self) -> torch.Tensor:
        draws = self.sample(max(20000, self.num_data))
        return torch.cov(draws.T, correction=0).reshape(self.dim, self.dim)

    def _check_points(self, z: torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(z)
        if not z.is_floating_point():  # draws of discrete sites
            z = z.to(torch.get_default_dtype())
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must have shape (num_points, {self.dim}), got {tuple(z.shape)}")
        return z


class DiagonalNormalAggregatePosterior(AggregatePosterior):
    """q(z) with diagonal-Normal components N(loc_n, diag scale_n^2), loc and scale (N, D):
    the pairwise log-densities are matrix products (the fast path), and each coordinate's
    1-D marginal mixture is available (:meth:`marginal_log_prob`).

    >>> q = DiagonalNormalAggregatePosterior([SiteBlock("z", (2,), 0, 2)], 3,
    ...                                      loc=torch.zeros(3, 2), scale=torch.ones(3, 2))
    >>> q.log_prob(torch.zeros(1, 2))  # log N(0; 0, I) in two dimensions
    tensor([-1.8379])
    """

    is_diagonal_normal = True
    has_marginals = True

    def __init__(self, blocks: list[SiteBlock], num_data: int, loc: torch.Tensor,
                 scale: torch.Tensor):
        super().__init__(blocks, num_data)
        if loc.shape != (num_data, self.dim) or scale.shape != loc.shape:
            raise ValueError(f"loc and scale must have shape ({num_data}, {self.dim}), got "
                             f"{tuple(loc.shape)} and {tuple(scale.shape)}")
        self.loc, self.scale = loc, scale

    def pairwise_log_prob(self, z, rows=None):
        z = self._check_points(z)
        loc, scale = (self.loc, self.scale) if rows is None else (self.loc[rows], self.scale[rows])
        return _diag_normal_pairwise(z, loc.to(z.device), scale.to(z.device)).to(z.dtype)

    def log_prob(self, z, chunk_size=None, exclude=None):
        """log q(z) for each row of z, shape (M,), ``exclude`` as in
        :meth:`AggregatePosterior.log_prob`: one float64 matrix product per chunk pair
        (:func:`_diag_normal_pairwise`), written into one buffer that every pair reuses, and
        a float64 log-sum-exp; the result in z's dtype.

        >>> q = DiagonalNormalAggregatePosterior([SiteBlock("z", (1,), 0, 1)], 2,
        ...                                      loc=torch.tensor([[0.], [2.]]),
        ...                                      scale=torch.ones(2, 1))
        >>> q.log_prob(torch.tensor([[0.], [1.]]), exclude=torch.tensor([1, 0]))
        tensor([-0.9189, -1.4189])
        """
        z = self._check_points(z)  # one (m, r) matrix per chunk pair: it does not grow with D
        chunk_size = 1024 if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
        space = torch.empty(min(chunk_size, len(z)) * min(chunk_size, self.num_data),
                            dtype=torch.float64, device=z.device)

        def pairwise(features, rows):  # into the one buffer, unless a gradient is wanted
            coefficients = _diag_normal_coefficients(self.loc[rows].to(z.device),
                                                     self.scale[rows].to(z.device))
            if torch.is_grad_enabled() and (features.requires_grad
                                            or coefficients.requires_grad):
                return features @ coefficients.T
            out = space[:len(features) * len(coefficients)].view(len(features), -1)
            return torch.mm(features, coefficients.T, out=out)

        return _stream_log_mean_exp(pairwise, z, self.num_data, chunk_size, exclude,
                                    _diag_normal_features).to(z.dtype)

    def marginal_log_prob(self, z, chunk_size=None, exclude=None):
        """log q(z_i) of each coordinate's 1-D marginal mixture, shape (M, D); ``chunk_size``
        and ``exclude`` as in :meth:`AggregatePosterior.marginal_log_prob`.

        >>> q = DiagonalNormalAggregatePosterior([SiteBlock("z", (2,), 0, 2)], 3,
        ...                                      loc=torch.zeros(3, 2), scale=torch.ones(3, 2))
        >>> q.marginal_log_prob(torch.zeros(1, 2))  # log N(0; 0, 1) per coordinate
        tensor([[-0.9189, -0.9189]])
        """
        def pairwise(zc, rows):  # (m, r, D)
            return dist.Normal(self.loc[rows].to(zc), self.scale[rows].to(zc)).log_prob(
                zc[:, None, :])

        z = self._check_points(z)
        return mixture_log_mean_exp(pairwise, z, self.num_data,
                                    block_chunk(chunk_size, self.dim, z.element_size()), exclude)

    def sample(self, num_samples, generator=None):
        num_samples = check_positive_int(num_samples, "num_samples")
        idx = torch.randint(self.num_data, (num_samples,), generator=generator)
        eps = torch.randn(num_samples, self.dim, generator=generator, dtype=self.loc.dtype)
        return self.loc[idx] + self.scale[idx] * eps.to(self.loc.device)

    @property
    def component_means(self):
        return self.loc

    def _within_covariance(self, like):
        return torch.diag(self.scale.pow(2).mean(0))


class MixtureAggregatePosterior(AggregatePosterior):
    """q(z) with components of any family (Laplace, LogNormal, Categorical, ...), each
    evaluated through its own ``log_prob``. ``components``: a list of ``(rows, {site:
    distribution})``, the distributions batched over the datapoints ``rows``.

    >>> laplace = dist.Laplace(torch.zeros(2, 1), 1.0).to_event(1)
    >>> q = MixtureAggregatePosterior([SiteBlock("z", (1,), 0, 1)], 2,
    ...                               [(torch.arange(2), {"z": laplace})])
    >>> q.log_prob(torch.zeros(1, 1))  # log Laplace(0; 0, 1) = -log 2
    tensor([-0.6931])
    """

    def __init__(self, blocks: list[SiteBlock], num_data: int,
                 components: list[tuple[torch.Tensor, dict]]):
        super().__init__(blocks, num_data)
        self.components = components

    def pairwise_log_prob(self, z, rows=None):
        z = self._check_points(z)
        out = []
        for comp_rows, fns in self.components:
            keep = None if rows is None else torch.isin(comp_rows, _as_index(rows, comp_rows))
            if keep is not None and not keep.any():
                continue
            lp = z.new_zeros(z.shape[0], len(comp_rows))
            for block in self.blocks:
                value = z[:, block.start:block.stop].reshape(z.shape[0], 1, *block.shape)
                site_lp = _broadcast_log_prob(fns[block.name], value, len(comp_rows))
                lp = lp + site_lp.reshape(z.shape[0], len(comp_rows), -1).sum(-1)
            out.append(lp if keep is None else lp[:, keep])
        return torch.cat(out, 1)

    @property
    def has_marginals(self) -> bool:
        return all(_coordinate_marginals(fns[b.name]) is not None
                   for _, fns in self.components for b in self.blocks)

    def marginal_log_prob(self, z, chunk_size=None, exclude=None):
        """log q(z_i) of each coordinate's 1-D marginal mixture, shape (M, D), where every
        component's coordinates have known 1-D marginals (:attr:`has_marginals`): a
        MultivariateNormal's i-th marginal is N(loc_i, Sigma_ii); an Independent
        distribution's coordinates are its base distribution's. ``exclude`` as in
        :meth:`log_prob`.

        >>> mvn = dist.MultivariateNormal(torch.zeros(2, 2), torch.tensor([[4.0, 1.0],
        ...                                                                 [1.0, 1.0]]))
        >>> q = MixtureAggregatePosterior([SiteBlock("z", (2,), 0, 2)], 2,
        ...                               [(torch.arange(2), {"z": mvn})])
        >>> q.marginal_log_prob(torch.zeros(1, 2))  # log N(0; 0, 4), log N(0; 0, 1)
        tensor([[-1.6121, -0.9189]])
        """
        if not self.has_marginals:
            return super().marginal_log_prob(z, chunk_size, exclude)
        z = self._check_points(z)
        marginals = [(_as_index(comp_rows, z), [_coordinate_marginals(fns[b.name])
                                                for b in self.blocks])
                     for comp_rows, fns in self.components]

        def pairwise(zc, rows):  # (m, r, D)
            wanted = _as_index(rows, zc)
            out = []
            for comp_rows, per_block in marginals:
                keep = torch.isin(comp_rows, wanted)
                if not keep.any():
                    continue
                lp = torch.cat([
                    fn.log_prob(zc[:, b.start:b.stop].reshape(len(zc), 1, *b.shape))
                    .expand(len(zc), len(comp_rows), *b.shape).reshape(len(zc), len(comp_rows), -1)
                    for b, fn in zip(self.blocks, per_block, strict=True)], -1)
                out.append(lp[:, keep])
            return torch.cat(out, 1)

        return mixture_log_mean_exp(pairwise, z, self.num_data,
                                    block_chunk(chunk_size, self.dim, z.element_size()), exclude)

    def sample(self, num_samples, generator=None):
        return _shuffled_passes(self._one_draw_each, self.num_data, num_samples, generator)

    def _one_draw_each(self) -> torch.Tensor:
        return torch.cat([torch.cat([fns[b.name].sample().reshape(len(rows), -1)
                                     for b in self.blocks], -1)
                          for rows, fns in self.components])

    @property
    def component_means(self):
        """E_q[z | x_n], (N, D); a 1000-draw Monte Carlo mean for a distribution without an
        analytic one (e.g. a transformed Normal)."""
        return torch.cat([torch.cat([_moment(fns[b.name], 1).reshape(len(rows), -1)
                                     for b in self.blocks], -1)
                          for rows, fns in self.components])

    def _within_covariance(self, like):
        within = torch.zeros_like(like)
        try:
            for rows, fns in self.components:
                for b in self.blocks:
                    fn = fns[b.name]
                    if hasattr(fn, "covariance_matrix"):
                        cov = fn.covariance_matrix.reshape(len(rows), b.stop - b.start, -1)
                    else:
                        cov = torch.diag_embed(_moment(fn, 2).reshape(len(rows), -1))
                    within[b.start:b.stop, b.start:b.stop] += cov.sum(0)
        except NotImplementedError:  # no analytic variance: the covariance comes from draws
            return None
        return within / self.num_data


class ConditionedAggregatePosterior(AggregatePosterior):
    """q(z) of a hierarchical guide, whose later sites depend on earlier ones: q(z | x_n) =
    prod_k q(z_k | z_<k, x_n) of all its local sites jointly, evaluated by running the guide
    on the rows n conditioned on the points (``pyro.poutine.condition``).

    >>> from pyro_lvm.models import TwoLayerVAE
    >>> vae = TwoLayerVAE(6, latent_dims=(2, 1), hidden=((5,), (3,)))
    >>> q = AggregatePosterior.from_guide(vae.guide, torch.rand(20, 6).bernoulli())
    >>> type(q).__name__, q.log_prob(torch.zeros(4, 3)).shape
    ('ConditionedAggregatePosterior', torch.Size([4]))
    """

    def __init__(self, blocks: list[SiteBlock], num_data: int, guide, data: torch.Tensor,
                 data_plate: str = "data"):
        super().__init__(blocks, num_data)
        if data.shape[0] != num_data:
            raise ValueError(f"data has {data.shape[0]} rows, expected num_data = {num_data}")
        self.guide, self.data, self.data_plate = guide, data, data_plate
        self._broadcasts: bool | None = None       # checked on first use

    @property
    def conditioned(self) -> tuple:
        """(guide, data, data_plate): what q(z | x_n) is evaluated with."""
        return self.guide, self.data, self.data_plate

    def pairwise_log_prob(self, z, rows=None):
        """log q(z_j | x_n) with the guide conditioned on every z_j at once (the values
        broadcast over a leading dimension). The first call checks that this agrees with
        conditioning on one z_j at a time; a guide that does not broadcast is then evaluated
        one point at a time (slower, right), with a warning."""
        z = self._check_points(z)
        rows = _as_index(torch.arange(self.num_data) if rows is None else rows, self.data)
        if self._broadcasts is None:
            self._broadcasts = self._check_broadcast(z[:2], rows[:8])
        if not self._broadcasts:
            return torch.stack([self._conditioned_one(zj, rows) for zj in z])
        return self._conditioned_together(z, rows)

    def _conditioned_together(self, z, rows) -> torch.Tensor:
        """(M, R) log q(z_j | x_n), the guide conditioned on all points as a leading dim."""
        values = {b.name: z[:, b.start:b.stop].reshape(z.shape[0], 1, *b.shape).to(b.dtype)
                  for b in self.blocks}
        trace = self._run_conditioned(values, rows, " (conditioned on a leading dimension of "
                                                    "points)")
        out = z.new_zeros(z.shape[0], len(rows))
        for b in self.blocks:
            lp = trace.nodes[b.name]["fn"].log_prob(values[b.name])
            try:  # (M, R) where the site reads x_n, (M, 1) where it only reads other z
                out = out + lp.reshape(lp.shape[0], lp.shape[1], -1).sum(-1)
            except (RuntimeError, IndexError) as e:
                raise PairError(
                    f"AggregatePosterior: the guide's site {b.name!r} does not broadcast over a "
                    f"leading dimension of evaluation points (log-density of shape "
                    f"{tuple(lp.shape)}); the aggregate posterior of a hierarchical guide "
                    "needs it") from e
        return out

    def _run_conditioned(self, values, rows, detail=""):
        with minibatch(rows, self.num_data, self.data_plate), torch.no_grad(), eval_mode():
            return run_traced(poutine.condition(self.guide, data=values), (self.data[rows],),
                              call="AggregatePosterior", role="guide", detail=detail)

    def _conditioned_one(self, zj: torch.Tensor, rows) -> torch.Tensor:
        """(R,) log q(z_j | x_n) for one point z_j, no leading dimension."""
        values = {b.name: zj[b.start:b.stop].reshape(b.shape).expand(len(rows), *b.shape)
                  .to(b.dtype)
                  for b in self.blocks}
        trace = self._run_conditioned(values, rows)
        out = zj.new_zeros(len(rows))
        for b in self.blocks:
            lp = trace.nodes[b.name]["fn"].log_prob(values[b.name])
            out = out + lp.reshape(len(rows), -1).sum(-1)
        return out

    def _check_broadcast(self, z, rows) -> bool:
        """Whether conditioning the guide on a leading dimension of points gives what
        conditioning on each point alone gives (once per aggregate posterior)."""
        try:
            together = self._conditioned_together(z, rows)
            one = torch.stack([self._conditioned_one(zj, rows) for zj in z])
            ok = bool(torch.allclose(together.double(), one.double(), rtol=1e-4, atol=1e-3))
            reason = "the log-densities differ" if not ok else ""
        except PairError as e:
            ok, reason = False, str(e).split(": ", 1)[-1]
        if not ok:
            warnings.warn(
                "AggregatePosterior: the hierarchical guide does not broadcast over a leading "
                f"dimension of evaluation points ({reason}); its q(z | x_n) is evaluated one "
                "point at a time instead (correct, but slower). To vectorize: " + REMEDY,
                VectorizationWarning, stacklevel=5)
        return ok

    def sample(self, num_samples, generator=None):
        """Draws from the mixture: the guide's joint draws, ordered by the global RNG too
        (``generator`` is not used)."""
        return _shuffled_passes(self._one_draw_each, self.num_data, num_samples, None)

    def _one_draw_each(self) -> torch.Tensor:
        idx = torch.arange(self.num_data, device=self.data.device)
        with minibatch(idx, self.num_data, self.data_plate), torch.no_grad(), eval_mode():
            trace = run_traced(self.guide, (self.data,), call="AggregatePosterior",
                               role="guide")
        return torch.cat([trace.nodes[b.name]["value"].reshape(self.num_data, -1)
                          for b in self.blocks], -1)

    @property
    def component_means(self):
        """E_q[z | x_n], (N, D): a Monte Carlo mean over 64 joint draws of all layers."""
        return torch.stack([self._one_draw_each() for _ in range(64)]).mean(0)

    @property
    def covariance(self):
        """Cov_q[z], estimated from draws of the mixture (no analytic form)."""
        return self._covariance_of_draws()


class SampleAggregatePosterior(AggregatePosterior):
    """The aggregate posterior of a guide without a usable density (e.g. Delta, as in MAP):
    draws only, one per datapoint and pass, compared with other draws by two-sample tests.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def guide(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         pyro.sample("z", dist.Delta(x).to_event(1))
        >>> q = AggregatePosterior.from_guide(guide, torch.randn(50, 2))
        >>> type(q).__name__, q.sample(10).shape
        ('SampleAggregatePosterior', torch.Size([10, 2]))
    """

    def __init__(self, blocks: list[SiteBlock], num_data: int, draws: torch.Tensor):
        super().__init__(blocks, num_data)
        self.draws = draws   # (passes * N, D), pass after pass

    @classmethod
    def from_guide(cls, guide, data, sites=None, data_plate="data", batch_size=1024,
                   passes=1) -> SampleAggregatePosterior:
        """Collect ``passes`` draws per datapoint from the guide, whatever its densities.

        >>> from pyro_lvm.models import PPCA
        >>> q = SampleAggregatePosterior.from_guide(PPCA(4, 2).guide, torch.zeros(5, 4),
        ...                                         passes=3)
        >>> q.draws.shape, q.component_means.shape
        (torch.Size([15, 2]), torch.Size([5, 2]))
        """
        data = rows_for(data, guide)
        batch_size = check_positive_int(batch_size, "batch_size")
        n = data.shape[0]
        with eval_mode():
            chunks = [found for _ in range(check_positive_int(passes, "passes"))
                      for found in map_chunks(
                          lambda idx: _local_sites(guide, data.fetch(idx), data_plate, sites),
                          n, batch_size, data.device, data_plate)]
        draws = [torch.cat([s["value"].reshape(s["value"].shape[0], -1) for s in f.values()],
                           -1) for f in chunks]
        return cls(_blocks(chunks[0]), n, torch.cat(draws))

    def pairwise_log_prob(self, z, rows=None):
        """Not available: the guide's distributions have no density to mix."""
        raise ValueError("this guide's sites (Delta) have no density: the aggregate posterior "
                         "is known through draws only; compare it with two-sample tests")

    def sample(self, num_samples, generator=None):
        """Resampled draws (with replacement)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        return self.draws[torch.randint(len(self.draws), (num_samples,), generator=generator)]

    @property
    def component_means(self):
        """The mean of each datapoint's draws, (N, D)."""
        return self.draws.reshape(-1, self.num_data, self.dim).mean(0)

    @property
    def mean(self):
        """Mean of the draws."""
        return self.draws.mean(0)

    @property
    def covariance(self):
        """Covariance of the draws."""
        return torch.cov(self.draws.T, correction=0).reshape(self.dim, self.dim)


def sample_prior(model, data_like: torch.Tensor, blocks) -> torch.Tensor:
    """Draws of z from the model's own prior, one per row of ``data_like``, flattened like the
    aggregate posterior's z (``blocks`` order): run the model un-conditioned.

    >>> from pyro_lvm.models import PPCA
    >>> ppca = PPCA(4, 2)
    >>> q = AggregatePosterior.from_guide(ppca.exact_posterior, ppca.sample(20))
    >>> sample_prior(ppca.model, torch.zeros(30, 4), q.blocks).shape
    torch.Size([30, 2])
    """
    with torch.no_grad(), eval_mode():
        values = simulate(model, data_like)
    missing = [b.name for b in blocks if b.name not in values]
    if missing:
        raise ValueError(f"the model has no sample site {missing[0]!r}")
    return torch.cat([values[b.name].reshape(data_like.shape[0], -1) for b in blocks], -1)


# -- reading the guide ---------------------------------------------------------------------
def _from_guide(guide, data, sites, data_plate, batch_size, model=None) -> AggregatePosterior:
    """:meth:`AggregatePosterior.from_guide`: the first chunk decides the class."""
    n = data.shape[0]
    first = torch.arange(min(batch_size, n), device=data.device)
    with trial(), minibatch(first, n, data_plate):  # a look that consumes no random numbers
        x_first = data.fetch(first)
        if model is not None:
            pair = pair_sites(model, guide, (x_first,), None, data_plate, "AggregatePosterior")
            pair.refuse_global("AggregatePosterior", data_plate)
            pair.refuse_extra("AggregatePosterior", data_plate)
        found = _local_sites(guide, x_first, data_plate, sites)
        delta = any(_is_delta(s["fn"]) for s in found.values())
        dependent = None if delta else _dependent_site(guide, x_first, data_plate, found)
        if dependent is not None and set(_local_sites(guide, x_first, data_plate,
                                                      None)) != set(found):
            raise ValueError(
                f"guide site {dependent!r} depends on the value of another latent site of "
                "the guide that is not selected, so its q(z | x_n) is not one distribution "
                "per datapoint; select every local site (the default) or only sites that "
                "do not depend on others")
    blocks = _blocks(found)
    if delta:
        return SampleAggregatePosterior.from_guide(guide, data, list(found), data_plate,
                                                   batch_size)
    if dependent is not None:  # q(z | x_n) of all sites jointly: run the guide on z
        return ConditionedAggregatePosterior(blocks, n, guide, data.materialize(), data_plate)
    with eval_mode():
        chunks = map_chunks(lambda idx: (idx, _local_sites(guide, data.fetch(idx), data_plate,
                                                           list(found))),
                            n, batch_size, data.device, data_plate)
    normal = _diagonal_normal(chunks)
    if normal is not None:
        return DiagonalNormalAggregatePosterior(blocks, n, *normal)
    return MixtureAggregatePosterior(
        blocks, n, [(idx, {name: s["fn"] for name, s in f.items()}) for idx, f in chunks])


def _local_sites(guide, x, data_plate, sites) -> dict:
    """Trace the guide on the rows ``x`` (inside the caller's minibatch handler); return
    {name: site} for its local latent sites (all, or the names in ``sites``)."""
    with torch.no_grad():
        trace = run_traced(guide, (x,), call="AggregatePosterior", role="guide")
    transported, loose, _ = auxiliary_roles(guide, trace, (x,), call="AggregatePosterior")
    loose = [name for name in loose if sites is None or name in sites]
    if loose:
        raise PairError(extra_site_message("AggregatePosterior", loose[0], data_plate, True,
                                           data_frame(trace.nodes[loose[0]], data_plate)
                                           is None))
    local = {}
    for name, site in sample_sites(trace):
        if site["is_observed"] or (sites is None and name in transported):
            continue
        if data_frame(site, data_plate) is None:
            raise PairError(global_latent_message("AggregatePosterior", name, data_plate))
        local[name] = site
    if sites is None:
        if not local:
            raise ValueError(f"the guide has no latent site inside pyro.plate({data_plate!r}): "
                             "there is no local posterior to aggregate")
    else:
        missing = [s for s in sites if s not in local]
        if missing:
            raise ValueError(f"requested sites {missing} are not local latent sites of the "
                             f"guide (it has {sorted(local)})")
        local = {s: local[s] for s in sites}
    for site in local.values():
        value = site["value"]
        if value.dim() == 0 or value.shape[0] != x.shape[0]:
            raise ValueError(
                f"guide site {site['name']!r} has value of shape {tuple(value.shape)}, but the "
                f"batch has {x.shape[0]} rows: pyro.plate({data_plate!r}) must be its "
                "outermost dimension and have size x.shape[0]")
    return local


def _blocks(found) -> list[SiteBlock]:
    """Lay the sites' per-datapoint values out one after the other in a flat z."""
    blocks, offset = [], 0
    for name, site in found.items():
        shape = tuple(site["value"].shape[1:])
        blocks.append(SiteBlock(name, shape, offset, offset + math.prod(shape),
                                site["value"].dtype))
        offset += math.prod(shape)
    return blocks


def _dependent_site(guide, x, data_plate, found) -> str | None:
    """The first selected site whose distribution depends on another latent of the guide, or
    None (the guide's dependency structure, :func:`pyro_lvm.contract.guide_dependencies`)."""
    deps = guide_dependencies(guide, (x,), data_plate=data_plate, call="AggregatePosterior")
    return next((name for name in found if deps.get(name)), None)


def _unwrap(fn):
    while isinstance(fn, dist.Independent | torch.distributions.Independent):
        fn = fn.base_dist
    return fn


def _broadcast_log_prob(fn, value: torch.Tensor, rows: int) -> torch.Tensor:
    """``fn.log_prob(value)`` of points (M, 1, ...) under components batched over ``rows``:
    by broadcasting, or with the points expanded to (M, rows, ...) for a distribution that
    does not broadcast a new leading dimension (a flow conditioned on a context per row)."""
    try:
        return fn.log_prob(value)
    except (RuntimeError, IndexError, ValueError):
        return fn.log_prob(value.expand(value.shape[0], rows, *value.shape[2:]))


def _coordinate_marginals(fn):
    """A distribution with scalar events whose ``log_prob`` of a component's value gives each
    coordinate's 1-D marginal log-density (a MultivariateNormal's N(loc_i, Sigma_ii), an
    Independent distribution's base), or None where they are not known in closed form."""
    if isinstance(fn, torch.distributions.MultivariateNormal):
        return dist.Normal(fn.loc, fn.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt())
    base = _unwrap(fn)
    if base.event_shape != torch.Size() or isinstance(base, dist.Delta):
        return None
    return base


def _is_delta(fn) -> bool:
    return isinstance(_unwrap(fn), dist.Delta)


def _diagonal_normal(chunks) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(loc, scale), each (N, D), when every site of every chunk is a (possibly
    Independent-wrapped) Normal, else None."""
    loc, scale = [], []
    for idx, found in chunks:
        fns = [_unwrap(s["fn"]) for s in found.values()]
        if not all(isinstance(fn, torch.distributions.Normal) for fn in fns):
            return None
        shapes = [s["value"].shape for s in found.values()]
        loc.append(torch.cat([fn.loc.expand(shape).reshape(len(idx), -1)
                              for fn, shape in zip(fns, shapes, strict=True)], -1))
        scale.append(torch.cat([fn.scale.expand(shape).reshape(len(idx), -1)
                                for fn, shape in zip(fns, shapes, strict=True)], -1))
    return torch.cat(loc), torch.cat(scale)


def _diag_normal_pairwise(z, loc, scale):
    """log N(z_j; loc_n, diag scale_n^2) for all (j, n), in float64, as one matrix product:

    log N = [z^2, z, 1]_j . [-1/(2 s^2), m/s^2, -sum m^2/(2 s^2) - sum log s - d/2 log 2 pi]_n

    (the Gaussian's expanded quadratic form). Its terms are large and cancel for confident
    posteriors (small s: 53 nats of error in float32 at |m| = 5, s = 1e-3), so the product is
    taken in float64 whatever the inputs' precision.

    >>> z, loc, scale = torch.randn(3, 2), torch.randn(4, 2), torch.rand(4, 2) + 0.5
    >>> torch.allclose(_diag_normal_pairwise(z, loc, scale),
    ...                dist.Normal(loc, scale).log_prob(z[:, None]).sum(-1).double(), atol=1e-5)
    True
    """
    return _diag_normal_features(z) @ _diag_normal_coefficients(loc, scale).T


def _diag_normal_features(z):
    """[z^2, z, 1] in float64, (M, 2D + 1): the points' side of :func:`_diag_normal_pairwise`."""
    z = z.double()
    return torch.cat([z.pow(2), z, z.new_ones(z.shape[0], 1)], 1)


def _diag_normal_coefficients(loc, scale):
    """The components' side of :func:`_diag_normal_pairwise` in float64, (R, 2D + 1)."""
    loc, scale = loc.double(), scale.double()
    prec = scale.pow(-2)
    const = (-0.5 * (loc.pow(2) * prec).sum(1) - scale.log().sum(1)
             - 0.5 * loc.shape[1] * math.log(2 * math.pi))
    return torch.cat([-0.5 * prec, loc * prec, const[:, None]], 1)


def _moment(fn, power: int) -> torch.Tensor:
    """E[z] (power 1) or Var[z] (power 2) of a component: exact where the distribution has
    it, a 1000-draw Monte Carlo estimate where it has none (or a nan one)."""
    base = _unwrap(fn)
    if isinstance(base, torch.distributions.Categorical):  # its mean is nan: use the probs
        probs = base.probs
        k = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
        mean = (probs * k).sum(-1)
        return mean if power == 1 else (probs * k.pow(2)).sum(-1) - mean.pow(2)
    try:
        value = fn.mean if power == 1 else fn.variance
        if torch.isfinite(value).all():
            return value
    except NotImplementedError:
        pass
    with torch.no_grad():
        draws = fn.sample((1000,)).double()
    return (draws.mean(0) if power == 1 else draws.var(0)).to(torch.get_default_dtype())


def _as_index(rows: slice | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Row indices as a tensor on ``like``'s device (a slice must have a stop)."""
    if isinstance(rows, slice):
        rows = torch.arange(rows.start or 0, rows.stop)
    return rows.to(like.device)


def _shuffled_passes(one_draw_each: Callable, num_data: int, num_samples: int,
                     generator: torch.Generator | None) -> torch.Tensor:
    """Draws from an equally weighted mixture: passes of one draw from every component,
    shuffled by ``generator`` and cut to ``num_samples``."""
    num_samples = check_positive_int(num_samples, "num_samples")
    draws = torch.cat([one_draw_each() for _ in range(math.ceil(num_samples / num_data))])
    return draws[torch.randperm(len(draws), generator=generator)[:num_samples]]
