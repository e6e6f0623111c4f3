"""The aggregate posterior q(z) = (1/N) sum_n q(z | x_n) of a guide over a data set.

Hoffman & Johnson (2016, "ELBO surgery") and the texts behind this library: a model fitted by
maximum likelihood matches the data's marginal, but nothing forces q(z) to equal the prior
(the regularizer r(z)); their gap is a diagnostic of the fit. For one datapoint's latents
z = (all selected local sites, flattened and concatenated), this module gives q(z) as an
exact mixture, streamed in chunks, with a matrix-product fast path for diagonal Normals.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pyro.distributions as dist
import pyro.poutine as poutine
import torch

from .._checks import as_data_tensor, check_positive_int
from ..contract import (
    PairError,
    data_frame,
    eval_mode,
    global_latent_message,
    guide_dependencies,
    run_traced,
    sample_sites,
)
from ..handlers import minibatch, simulate
from ..infer.particles import REMEDY, VectorizationWarning


@dataclass(frozen=True)
class SiteBlock:
    """Where a latent site lives in the flattened z of one datapoint."""

    name: str
    shape: tuple[int, ...]   # per-datapoint value shape
    start: int
    stop: int
    dtype: torch.dtype = torch.float32  # the site's own (a Categorical's draws are integers)


def _base_normal(fn):
    """(loc, scale) of a (possibly Independent-wrapped) Normal, else None."""
    while isinstance(fn, dist.Independent | torch.distributions.Independent):
        fn = fn.base_dist
    if isinstance(fn, torch.distributions.Normal):
        return fn.loc, fn.scale
    return None


def _is_delta(fn) -> bool:
    while isinstance(fn, dist.Independent | torch.distributions.Independent):
        fn = fn.base_dist
    return isinstance(fn, dist.Delta)


def _guide_sites(guide, x, idx, num_data, data_plate, sites):
    """Trace the guide on rows ``idx``; return {name: site} for its local latent sites."""
    with minibatch(idx, num_data, data_plate), torch.no_grad():
        trace = run_traced(guide, (x,), call="AggregatePosterior", role="guide")
    local = {}
    for name, site in sample_sites(trace):
        if site["is_observed"]:
            continue
        if data_frame(site, data_plate) is None:
            raise PairError(global_latent_message("AggregatePosterior", name, data_plate))
        local[name] = site
    if sites is None:
        if not local:
            raise ValueError(f"the guide has no latent site inside pyro.plate({data_plate!r}): "
                             "there is no local posterior to aggregate")
        return local
    missing = [s for s in sites if s not in local]
    if missing:
        raise ValueError(f"requested sites {missing} are not local latent sites of the guide "
                         f"(it has {sorted(local)})")
    return {s: local[s] for s in sites}


def _blocks(found) -> list[SiteBlock]:
    """Lay the sites' per-datapoint values out one after the other in a flat z."""
    blocks, offset = [], 0
    for name, site in found.items():
        shape = tuple(site["value"].shape[1:])
        blocks.append(SiteBlock(name, shape, offset, offset + math.prod(shape),
                                site["value"].dtype))
        offset += math.prod(shape)
    return blocks


def _check_batch(site, batch: int, data_plate: str) -> None:
    value = site["value"]
    if value.dim() == 0 or value.shape[0] != batch:
        raise ValueError(
            f"guide site {site['name']!r} has value of shape {tuple(value.shape)}, but the "
            f"batch has {batch} rows: pyro.plate({data_plate!r}) must be its outermost "
            "dimension and have size x.shape[0]"
        )


class AggregatePosterior:
    """The mixture q(z) = (1/N) sum_n q(z | x_n) of a guide's local posteriors.

    Build it with :meth:`from_guide`. z is one datapoint's latent vector: the selected
    sites, flattened and concatenated in ``blocks`` order. ``log_prob`` is the exact mixture
    density, streamed over chunks of evaluation points and of components so that memory
    stays bounded; for diagonal-Normal components the pairwise log-densities are matrix
    products (the fast path).

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> x = ppca.sample(500)
        >>> q = AggregatePosterior.from_guide(ppca.exact_posterior, x)
        >>> q.sample(7).shape, q.log_prob(torch.zeros(3, 2)).shape
        (torch.Size([7, 2]), torch.Size([3]))
    """

    def __init__(self, blocks, num_data, loc=None, scale=None, components=None,
                 conditioned=None):
        self.blocks = blocks
        self.num_data = num_data
        self.dim = blocks[-1].stop
        self.loc, self.scale = loc, scale          # fast path: (N, D) tensors
        self.components = components               # generic: [(rows, {name: fn})]
        self.conditioned = conditioned             # hierarchical: (guide, data, data_plate)
        self._broadcasts: bool | None = None       # hierarchical: checked on first use

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_guide(cls, guide, data, sites=None, data_plate: str = "data",
                   batch_size: int = 1024):
        """Run ``guide`` over ``data`` in chunks and collect every q(z | x_n).

        The guide runs with every nn.Module in eval mode. Returns an
        :class:`AggregatePosterior`, or a :class:`SampleAggregatePosterior` (draws only) when
        a site's guide distribution has no usable density (a Delta, as in MAP).
        A selected site whose distribution depends on another latent (a hierarchical guide)
        is refused with an error naming both: its q(z | x_n) is not one distribution per
        datapoint.
        """
        with eval_mode():
            return cls._from_guide(guide, as_data_tensor(data, "data"), sites, data_plate,
                                   check_positive_int(batch_size, "batch_size"))

    @classmethod
    def _from_guide(cls, guide, data, sites, data_plate, batch_size):
        n = data.shape[0]
        blocks, parts, loc, scale = None, [], [], []
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n), device=data.device)
            found = _guide_sites(guide, data[idx], idx, n, data_plate, sites)
            for site in found.values():
                _check_batch(site, len(idx), data_plate)
            if blocks is None:
                blocks = _blocks(found)
                if any(_is_delta(s["fn"]) for s in found.values()):
                    return SampleAggregatePosterior.from_guide(guide, data, list(found),
                                                               data_plate, batch_size)
                dependent = _dependent_site(guide, data[idx], idx, n, data_plate, found)
                if dependent is not None:
                    every = _guide_sites(guide, data[idx], idx, n, data_plate, None)
                    if set(every) != set(found):
                        raise ValueError(
                            f"guide site {dependent!r} depends on the value of another latent "
                            "site of the guide that is not selected, so its q(z | x_n) is not "
                            "one distribution per datapoint; select every local site (the "
                            "default) or only sites that do not depend on others")
                    # q(z | x_n) of all sites jointly: evaluate by running the guide
                    return cls(blocks, n, conditioned=(guide, data, data_plate))
            parts.append((idx, {name: s["fn"] for name, s in found.items()}))
            normals = [_base_normal(s["fn"]) for s in found.values()]
            if all(p is not None for p in normals) and loc is not None:
                shape = (len(idx), -1)
                loc.append(torch.cat([lc.expand(s["value"].shape).reshape(shape)
                                      for (lc, _), s in zip(normals, found.values(),
                                                            strict=True)], -1))
                scale.append(torch.cat([sc.expand(s["value"].shape).reshape(shape)
                                        for (_, sc), s in zip(normals, found.values(),
                                                              strict=True)], -1))
            else:
                loc = None
        if loc is not None:
            return cls(blocks, n, loc=torch.cat(loc), scale=torch.cat(scale))
        return cls(blocks, n, components=parts)

    @property
    def is_diagonal_normal(self) -> bool:
        """Whether the fast path (diagonal-Normal components) is in use."""
        return self.loc is not None

    # -- density ---------------------------------------------------------------------------
    def pairwise_log_prob(self, z: torch.Tensor, rows: slice | torch.Tensor | None = None):
        """log q(z_j | x_n) for every evaluation point j and component n in ``rows``: (M, R).

        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> q = AggregatePosterior.from_guide(ppca.exact_posterior, ppca.sample(10))
        >>> q.pairwise_log_prob(torch.zeros(3, 2)).shape
        torch.Size([3, 10])
        """
        z = self._check_points(z)
        if self.is_diagonal_normal:
            loc, scale = self.loc, self.scale
            if rows is not None:
                loc, scale = loc[rows], scale[rows]
            return _diag_normal_pairwise(z, loc.to(z), scale.to(z))
        if self.conditioned is not None:
            return self._conditioned_pairwise(z, rows)
        out = []
        for comp_rows, fns in self.components:
            keep = _select(comp_rows, rows)
            if keep is not None and not keep.any():
                continue
            lp = z.new_zeros(z.shape[0], len(comp_rows))
            for block in self.blocks:
                value = z[:, block.start:block.stop].reshape(z.shape[0], 1, *block.shape)
                site_lp = fns[block.name].log_prob(value)
                lp = lp + site_lp.reshape(z.shape[0], len(comp_rows), -1).sum(-1)
            out.append(lp if keep is None else lp[:, keep])
        return torch.cat(out, 1)

    def _conditioned_pairwise(self, z, rows):
        """log q(z_j | x_n) by running the guide on rows n, conditioned on every z_j at once
        (the values broadcast over a leading dimension). The first call checks that this
        agrees with conditioning on one z_j at a time; a guide that does not broadcast is
        then evaluated one point at a time (slower, right), with a warning."""
        data = self.conditioned[1]
        if rows is None:
            rows = torch.arange(self.num_data)
        if isinstance(rows, slice):
            rows = torch.arange(rows.start or 0, rows.stop)
        rows = rows.to(data.device)
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
        guide, data, data_plate = self.conditioned
        with minibatch(rows, self.num_data, data_plate), torch.no_grad(), eval_mode():
            return run_traced(poutine.condition(guide, data=values), (data[rows],),
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
        conditioning on each point alone gives (once per AggregatePosterior)."""
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
                VectorizationWarning, stacklevel=4)
        return ok

    def log_prob(self, z: torch.Tensor, chunk_size: int = 1024,
                 exclude: torch.Tensor | None = None) -> torch.Tensor:
        """log q(z) = logsumexp_n log q(z | x_n) - log N for each row of z, shape (M,).

        Streamed over ``chunk_size`` evaluation points times ``chunk_size`` components at a
        time. ``exclude[j] = n`` leaves component n out of point j's mixture (then the
        average is over N - 1 components): the leave-one-out estimate for a point drawn
        from q(z | x_n) itself, which removes the upward bias of its own component.
        """
        z = self._check_points(z)
        chunk_size = check_positive_int(chunk_size, "chunk_size")
        out = []
        for a in range(0, z.shape[0], chunk_size):
            zc = z[a:a + chunk_size]
            acc = torch.full((zc.shape[0],), -math.inf, dtype=z.dtype, device=z.device)
            for b in range(0, self.num_data, chunk_size):
                rows = torch.arange(b, min(b + chunk_size, self.num_data), device=z.device)
                lp = self.pairwise_log_prob(zc, rows)
                if exclude is not None:
                    ex = exclude[a:a + chunk_size].to(z.device)
                    lp = lp.masked_fill(ex[:, None] == rows[None, :], -math.inf)
                acc = torch.logaddexp(acc, lp.logsumexp(1))
            out.append(acc)
        count = self.num_data - (1 if exclude is not None else 0)
        return torch.cat(out) - math.log(count)

    def marginal_log_prob(self, z: torch.Tensor, chunk_size: int = 1024,
                          exclude: torch.Tensor | None = None) -> torch.Tensor:
        """log q(z_i) of each coordinate's 1-D marginal mixture, shape (M, D) (fast path);
        ``exclude`` as in :meth:`log_prob`.

        >>> from pyro_lvm.models import VAE
        >>> vae = VAE(8, 2, hidden=(4,))
        >>> q = AggregatePosterior.from_guide(vae.guide, torch.rand(20, 8).bernoulli())
        >>> q.marginal_log_prob(torch.zeros(5, 2)).shape
        torch.Size([5, 2])
        """
        if not self.is_diagonal_normal:
            raise ValueError("per-coordinate marginals need diagonal-Normal components "
                             "(a guide whose local sites are Normal)")
        chunk_size = check_positive_int(chunk_size, "chunk_size")
        z = self._check_points(z)
        out = []
        for a in range(0, z.shape[0], chunk_size):
            zc = z[a:a + chunk_size]
            acc = torch.full(zc.shape, -math.inf, dtype=z.dtype, device=z.device)
            for b in range(0, self.num_data, chunk_size):
                loc, scale = self.loc[b:b + chunk_size].to(z), self.scale[b:b + chunk_size].to(z)
                lp = dist.Normal(loc, scale).log_prob(zc[:, None, :])  # (m, r, D)
                if exclude is not None:
                    rows = torch.arange(b, b + loc.shape[0], device=z.device)
                    ex = exclude[a:a + chunk_size].to(z.device)
                    lp = lp.masked_fill((ex[:, None] == rows[None, :])[..., None], -math.inf)
                acc = torch.logaddexp(acc, lp.logsumexp(1))
            out.append(acc)
        count = self.num_data - (1 if exclude is not None else 0)
        return torch.cat(out) - math.log(count)

    # -- draws and moments -----------------------------------------------------------------
    def sample(self, num_samples: int, generator: torch.Generator | None = None):
        """Draws from the mixture: a uniformly chosen component, then a draw from it.
        ``generator`` makes the diagonal-Normal path reproducible; the other paths draw from
        the guide's distributions with the global RNG (``generator`` then only orders them).

        >>> from pyro_lvm.models import PPCA
        >>> q = AggregatePosterior.from_guide(PPCA(4, 2).exact_posterior, torch.zeros(5, 4))
        >>> q.sample(12).shape
        torch.Size([12, 2])
        """
        num_samples = check_positive_int(num_samples, "num_samples")
        if self.is_diagonal_normal:
            idx = torch.randint(self.num_data, (num_samples,), generator=generator)
            eps = torch.randn(num_samples, self.dim, generator=generator,
                              dtype=self.loc.dtype)
            return self.loc[idx] + self.scale[idx] * eps.to(self.loc.device)
        passes = math.ceil(num_samples / self.num_data)
        draws = torch.cat([self._one_draw_each() for _ in range(passes)])
        generator = None if self.conditioned is not None else generator
        return draws[torch.randperm(len(draws), generator=generator)[:num_samples]]

    def _one_draw_each(self) -> torch.Tensor:
        if self.conditioned is not None:
            guide, data, data_plate = self.conditioned
            idx = torch.arange(self.num_data, device=data.device)
            with minibatch(idx, self.num_data, data_plate), torch.no_grad(), eval_mode():
                trace = run_traced(guide, (data,), call="AggregatePosterior", role="guide")
            return torch.cat([trace.nodes[b.name]["value"].reshape(self.num_data, -1)
                              for b in self.blocks], -1)
        rows = []
        for comp_rows, fns in self.components:
            rows.append(torch.cat([fns[b.name].sample().reshape(len(comp_rows), -1)
                                   for b in self.blocks], -1))
        return torch.cat(rows)

    @property
    def component_means(self) -> torch.Tensor:
        """E_q[z | x_n] for every datapoint, (N, D); a 1000-draw Monte Carlo mean for a
        distribution without an analytic one (e.g. a transformed Normal)."""
        if self.is_diagonal_normal:
            return self.loc
        if self.conditioned is not None:  # Monte Carlo over the joint draws of all layers
            return torch.stack([self._one_draw_each() for _ in range(64)]).mean(0)
        return torch.cat([torch.cat([_mean(fns[b.name]).reshape(len(rows), -1)
                                     for b in self.blocks], -1)
                          for rows, fns in self.components])

    @property
    def mean(self) -> torch.Tensor:
        """E_q[z] = mean_n E_q[z | x_n]."""
        return self.component_means.mean(0)

    @property
    def covariance(self) -> torch.Tensor:
        """Cov_q[z] = mean_n Cov_q[z | x_n] + Cov_n(E_q[z | x_n]) (law of total covariance)."""
        means = self.component_means
        between = torch.cov(means.T, correction=0).reshape(self.dim, self.dim)
        if self.is_diagonal_normal:
            within = torch.diag(self.scale.pow(2).mean(0))
        elif self.conditioned is not None:
            draws = self.sample(max(20000, self.num_data))
            return torch.cov(draws.T, correction=0).reshape(self.dim, self.dim)
        else:
            within = torch.zeros_like(between)
            try:
                for rows, fns in self.components:
                    for b in self.blocks:
                        fn = fns[b.name]
                        if hasattr(fn, "covariance_matrix"):
                            cov = fn.covariance_matrix.reshape(len(rows), b.stop - b.start, -1)
                        else:
                            cov = torch.diag_embed(_moment(fn, 2).reshape(len(rows), -1))
                        within[b.start:b.stop, b.start:b.stop] += cov.sum(0)
            except NotImplementedError:  # no analytic variance: estimate from draws
                draws = self.sample(max(20000, self.num_data))
                return torch.cov(draws.T, correction=0).reshape(self.dim, self.dim)
            within = within / self.num_data
        return within + between

    def _check_points(self, z: torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(z)
        if not z.is_floating_point():  # draws of discrete sites
            z = z.to(torch.get_default_dtype())
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must have shape (num_points, {self.dim}), got {tuple(z.shape)}")
        return z


def _index_probs(fn) -> torch.Tensor | None:
    """The probabilities of a Categorical's values 0..K-1 (torch's Categorical.mean is nan)."""
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return fn.probs if isinstance(fn, torch.distributions.Categorical) else None


def _moment(fn, power: int) -> torch.Tensor:
    """E[z] (power 1) or Var[z] (power 2) of a component: exact where the distribution has
    it, a 1000-draw Monte Carlo estimate where it has none (or a nan one)."""
    probs = _index_probs(fn)
    if probs is not None:
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


def _mean(fn) -> torch.Tensor:
    return _moment(fn, 1)


def _select(comp_rows: torch.Tensor, rows) -> torch.Tensor | None:
    if rows is None:
        return None
    if isinstance(rows, slice):
        rows = torch.arange(rows.start or 0, rows.stop)
    return torch.isin(comp_rows, rows.to(comp_rows.device))


def _diag_normal_pairwise(z, loc, scale):
    """log N(z_j; loc_n, diag scale_n^2) for all (j, n) as three matrix products.

    sum_i -(z_ji - m_ni)^2 / (2 s_ni^2) = -(z^2 @ (1/2s^2)^T) + z @ (m/s^2)^T - sum m^2/(2s^2)

    The three terms are large and cancel for confident posteriors (small s), so they are
    computed in float64 whatever the inputs' precision, and the result cast back.
    """
    dtype = z.dtype
    z, loc, scale = z.double(), loc.double(), scale.double()
    prec = scale.pow(-2)
    quad = (-0.5 * z.pow(2)) @ prec.T + z @ (loc * prec).T - 0.5 * (loc.pow(2) * prec).sum(1)
    norm = -scale.log().sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
    return (quad + norm).to(dtype)


def _dependent_site(guide, x, idx, num_data, data_plate, found) -> str | None:
    """The first selected site whose distribution depends on another latent of the guide, or
    None (the guide's dependency structure, :func:`pyro_lvm.contract.guide_dependencies`)."""
    with minibatch(idx, num_data, data_plate):
        deps = guide_dependencies(guide, (x,), data_plate=data_plate,
                                  call="AggregatePosterior")
    for name in found:
        if deps.get(name):
            return name
    return None


class SampleAggregatePosterior:
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

    def __init__(self, draws: torch.Tensor, blocks, num_data: int):
        self.draws, self.blocks, self.num_data = draws, blocks, num_data
        self.dim = draws.shape[1]

    @classmethod
    def from_guide(cls, guide, data, sites, data_plate="data", batch_size=1024, passes=1):
        """Collect ``passes`` draws per datapoint from the guide."""
        n = data.shape[0]
        draws, blocks = [], None
        for _ in range(passes):
            for start in range(0, n, batch_size):
                idx = torch.arange(start, min(start + batch_size, n), device=data.device)
                found = _guide_sites(guide, data[idx], idx, n, data_plate, sites)
                if blocks is None:
                    blocks = _blocks(found)
                draws.append(torch.cat([s["value"].reshape(len(idx), -1)
                                        for s in found.values()], -1))
        return cls(torch.cat(draws), blocks, n)

    def sample(self, num_samples: int, generator: torch.Generator | None = None):
        """Resampled draws (with replacement)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        return self.draws[torch.randint(len(self.draws), (num_samples,), generator=generator)]

    @property
    def mean(self) -> torch.Tensor:
        """Mean of the draws."""
        return self.draws.mean(0)

    @property
    def covariance(self) -> torch.Tensor:
        """Covariance of the draws."""
        return torch.cov(self.draws.T, correction=0).reshape(self.dim, self.dim)

    def log_prob(self, z):
        """Not available: the guide's distributions have no density to mix."""
        raise ValueError("this guide's sites (Delta) have no density: the aggregate posterior "
                         "is known through draws only; compare it with two-sample tests")


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
