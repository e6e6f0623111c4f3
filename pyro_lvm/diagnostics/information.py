"""Rate, distortion, mutual information and the ELBO-surgery terms of a model/guide pair.

With z_n ~ q(z | x_n), the aggregate posterior q(z) = (1/N) sum_n q(z | x_n) and the model's
own prior p(z) (read from its sample sites, learned priors included):

- rate R = mean_n KL(q(z|x_n) || p(z)),   distortion D = -mean_n E_q[log p(x_n | z)]
  (Alemi et al. 2018, "Fixing a broken ELBO"); -ELBO = R + D.
- ELBO surgery (Hoffman & Johnson 2016): R = I_q(n; z) + KL(q(z) || p(z)), with the
  index-code mutual information I_q = E[log q(z|x_n) - log q(z)] <= log N.
- active units (Burda et al. 2016): coordinates with Cov_n(E_q[z_i | x_n]) above
  :data:`ACTIVE_UNIT_THRESHOLD` (0.01).
- total correlation of q(z): KL(q(z) || prod_i q(z_i)), and the per-coordinate marginal KL
  KL(q(z_i) || p(z_i)) (when p factorizes): both need each coordinate's 1-D marginal q(z_i),
  which the aggregate posterior has when its components' coordinates have closed-form
  marginals (diagonal or full-covariance Normals, independent coordinates of a scalar family;
  :attr:`AggregatePosterior.has_marginals`), and are None otherwise (a hierarchical guide).

Estimator of log q(z) at z_n ~ q(z | x_n), and its finite-N bias. The default, "plug_in",
evaluates the full N-component mixture: it is then an unbiased Monte Carlo estimate of the
KL of the *empirical* aggregate posterior (never negative in expectation), but as an estimate
of the population q(z) (N -> infinity) its log q(z) is biased upwards by z_n's own component,
by about log(1 + q(z_n|x_n) / (N q(z_n))) ~ e^I / N: I_q is pulled down (it can never exceed
log N, its ceiling) and KL(q(z)||p(z)) up. "leave_one_out" evaluates the other N - 1
components: that density estimate is unbiased, so its log is biased *downwards* by Jensen's
inequality, by about the same O(e^I / N). Both are controlled by mixing many more components
than e^I (N >> e^I, the reason the ceiling is reported); on PPCA with its exact posterior
(N = 4000, I = 2.8 to 4.1 nats) the plug-in marginal KL was +0.007 to +0.038 and the
leave-one-out one -0.009 to -0.051, bracketing the true 0. Evaluation points may be a subset
(``max_points``) while q(z) always mixes all N components. The three terms share the same
draws and the same log q(z), so R = I + KL(q(z)||p(z)) holds to rounding.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from .._checks import check_positive_int
from ..contract import PairError, eval_mode, rows_for
from ..handlers import map_batches, minibatch
from ..infer.importance import importance_sample, require_contract, site_log_probs
from ..rng import generator, seeded
from .aggregate import AggregatePosterior, SampleAggregatePosterior

ACTIVE_UNIT_THRESHOLD = 0.01
"""A latent coordinate z_i is active when its activity Cov_n(E_q[z_i | x_n]) exceeds this
(Burda, Grosse & Salakhutdinov 2016, "Importance weighted autoencoders": 10^-2; the
activity of an unused coordinate is orders of magnitude smaller)."""


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate with its standard error; ``float(e)`` is the value.

    >>> e = Estimate(1.5, 0.1)
    >>> float(e), e
    (1.5, 1.5000 ± 0.1000)
    """

    value: float
    se: float

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        return f"{self.value:.4f} ± {self.se:.4f}"


class _Moments:
    """Running count, mean and sum of squared deviations over rows, merged batch by batch
    (Chan, Golub & LeVeque 1979), in float64: the per-coordinate marginal KL without
    holding every datapoint's terms.

    >>> m = _Moments()
    >>> for part in torch.arange(10.).reshape(5, 2, 1):
    ...     m.add(part)
    >>> float(m.mean), float(m.std())
    (4.5, 3.0276503540974917)
    """

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.double()
        if rows.shape[0]:
            mean = rows.mean(0)
            self.merge(rows.shape[0], mean, (rows - mean).pow(2).sum(0))

    def merge(self, k: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Add the moments of k more rows (their mean and sum of squared deviations)."""
        if self.mean is None:
            self.count, self.mean, self.m2 = k, mean, m2
            return
        total = self.count + k
        delta = mean - self.mean
        self.mean = self.mean + delta * (k / total)
        self.m2 = self.m2 + m2 + delta.pow(2) * (self.count * k / total)
        self.count = total

    def std(self) -> torch.Tensor:
        return (self.m2 / (self.count - 1)).sqrt()


def _estimate(terms: torch.Tensor) -> Estimate:
    terms = terms.detach().double().flatten()
    se = float(terms.std() / math.sqrt(terms.numel())) if terms.numel() > 1 else math.nan
    return Estimate(float(terms.mean()), se)


@dataclass
class Information:
    """The fields of :func:`information`, per datapoint, in nats."""

    rate: Estimate
    distortion: Estimate
    mutual_information: Estimate
    mutual_information_ceiling: float
    marginal_kl: Estimate
    total_correlation: Estimate | None
    marginal_kl_per_dim: torch.Tensor | None
    marginal_kl_per_dim_se: torch.Tensor | None
    active_units: int
    unit_activity: torch.Tensor
    num_data: int
    num_points: int
    num_samples: int
    estimator: str
    aggregate: AggregatePosterior | None = field(default=None, repr=False, compare=False)
    """The aggregate posterior q(z) the estimates used (built here or passed in): reuse it for
    q(z) on the same rows instead of building it again."""
    nonfinite: dict[str, int] = field(default_factory=dict)
    """How many numbers behind each field are not finite (nan or inf): per-draw terms of
    "rate", "distortion", "mutual_information", "marginal_kl", "total_correlation", and
    coordinates of "marginal_kl_per_dim" and "unit_activity". Any of them makes that field's
    value not a number to use (:meth:`summary` says which); ``active_units`` counts only
    coordinates whose activity is finite."""

    @property
    def flagged(self) -> bool:
        """True when any number behind the result is not finite (:attr:`nonfinite`)."""
        return any(self.nonfinite.values())

    def surgery_residual(self) -> float:
        """rate - (mutual_information + marginal_kl): zero up to rounding."""
        return float(self.rate) - float(self.mutual_information) - float(self.marginal_kl)

    def warning(self) -> str | None:
        """What is not finite, in one sentence, or None when every number is.

        >>> e = Estimate(1.0, 0.1)
        >>> Information(e, e, e, 3.0, e, None, None, None, 1, torch.ones(1), 10, 10, 1,
        ...             "plug_in").warning() is None
        True
        """
        if not self.flagged:
            return None
        what = {"rate": "rate terms", "distortion": "distortion terms",
                "mutual_information": "mutual-information terms",
                "marginal_kl": "marginal-KL terms", "total_correlation":
                "total-correlation terms", "marginal_kl_per_dim": "coordinate's marginal KL",
                "unit_activity": "coordinate's unit activity"}
        listed = ", ".join(f"{k} {what.get(name, name)}" for name, k in self.nonfinite.items()
                           if k)
        return (f"not finite (nan or inf): {listed}; those estimates are not numbers to use "
                "(the guide or the model produced them: look for a scale that is 0 or inf, or "
                "parameters that diverged).")

    def summary(self) -> str:
        """The estimates, one a line, with a warning first when any is not finite.

        >>> e = Estimate(1.0, 0.1)
        >>> info = Information(e, e, e, 3.0, e, None, None, None, 1,
        ...                    torch.tensor([1.0, math.nan]), 10, 10, 1, "plug_in",
        ...                    nonfinite={"unit_activity": 1})
        >>> print(info.summary().splitlines()[1])  # doctest: +ELLIPSIS
          WARNING: not finite (nan or inf): 1 coordinate's unit activity; ...
        """
        lines = [f"Information over {self.num_data} rows ({self.num_points} points x "
                 f"{self.num_samples} draws; nats per datapoint, mean ± standard error):"]
        if self.flagged:
            lines.append(f"  WARNING: {self.warning()}")
        tc = "n/a" if self.total_correlation is None else repr(self.total_correlation)
        lines += [f"  rate R: {self.rate!r}", f"  distortion D: {self.distortion!r}",
                  f"  mutual information I_q(n; z): {self.mutual_information!r} (at most "
                  f"log N = {self.mutual_information_ceiling:.4f})",
                  f"  marginal KL(q(z) || p(z)): {self.marginal_kl!r}",
                  f"  total correlation of q(z): {tc}",
                  f"  active units: {self.active_units} of {len(self.unit_activity)}"
                  + (f" ({self.nonfinite['unit_activity']} not known: activity not finite)"
                     if self.nonfinite.get("unit_activity") else "")]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """Plain numbers (value and standard error), e.g. for JSON; without ``aggregate``.

        >>> e = Estimate(1.0, 0.1)
        >>> Information(e, e, e, 3.0, e, None, None, None, 1, torch.ones(1), 10, 10, 1,
        ...             "plug_in").as_dict()["rate"]
        {'value': 1.0, 'se': 0.1}
        """
        out = {}
        for key, value in self.__dict__.items():
            if key == "aggregate":
                continue
            if isinstance(value, Estimate):
                out[key] = {"value": value.value, "se": value.se}
            elif isinstance(value, torch.Tensor):
                out[key] = value.tolist()
            else:
                out[key] = value
        return out


def information(model, guide, data, num_samples: int = 1, max_points: int | None = None,
                estimator: str = "plug_in", data_plate: str = "data",
                batch_size: int = 512, seed: int | None = 0,
                vectorize: bool | str = "auto",
                aggregate: AggregatePosterior | None = None,
                chunk_size: int | None = None) -> Information:
    """Rate, distortion, mutual information, marginal KL, total correlation and active units.

    Args:
        num_samples: draws z ~ q(z | x_n) per evaluation datapoint.
        max_points: evaluate at this many datapoints (a seeded random subset) while q(z)
            mixes all N components; None: all of them.
        estimator: "plug_in" (default) or "leave_one_out" for log q(z) (module docstring).
        vectorize: "auto", True or False: how particles are drawn (as in
            :func:`pyro_lvm.diagnostics.log_likelihood`).
        aggregate: the guide's :class:`~pyro_lvm.diagnostics.AggregatePosterior` on these
            same rows (``AggregatePosterior.from_guide(guide, data, data_plate=...)``), or
            None to build it here. Its number of rows and its sites are checked. The one used
            is returned as ``Information.aggregate``. Building q runs the guide, which draws
            from the seeded random stream; with q given it is not run, so the estimates come
            from another stretch of the stream: equal within their standard errors, not bit
            for bit.
        chunk_size: points times components of q(z) evaluated at once (memory grows with
            it, not with N). None: for the per-coordinate marginals (and q(z) itself when its
            components are not diagonal Normals, which have a matrix-product path of their
            own) the most whose (chunk, chunk, D) block fits
            :data:`~pyro_lvm.diagnostics.aggregate.BLOCK_BUDGET` (32 MiB), at most 1024.
            The chunking changes the order of the log-sum-exp's additions only: the
            estimates agree to float rounding.

    Every nn.Module runs in eval mode, as in :func:`pyro_lvm.diagnostics.log_likelihood`.
    Guide sites without rsample (a Categorical) are fine; global latents, and model latents
    summed out by enumeration (they have no posterior here), are refused by name.

    The prior is the model's own: the model is replayed at the guide's draws, with the scales
    it puts on its sites ignored (a beta-VAE's KL weight tempers training, not the rate).
    Each estimate carries a Monte Carlo standard error over the draws, so at least 2 rows
    (and 2 evaluation points) are needed. Observed sites outside the data plate belong to no
    datapoint and are not part of the distortion.

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> x = ppca.sample(300)
        >>> info = information(ppca.model, ppca.exact_posterior, x)
        >>> abs(info.surgery_residual()) < 1e-6, info.active_units <= 2
        (True, True)
        >>> again = information(ppca.model, ppca.exact_posterior, x, aggregate=info.aggregate)
        >>> again.aggregate is info.aggregate
        True
    """
    if estimator not in ("leave_one_out", "plug_in"):
        raise ValueError(f"estimator must be 'leave_one_out' or 'plug_in', got {estimator!r}")
    data = rows_for(data, model, guide)
    num_samples = check_positive_int(num_samples, "num_samples")
    n = data.shape[0]
    if n < 2:  # a standard error needs 2 terms; a 1-component q(z) has I_q = 0 = log 1
        raise ValueError(f"information needs at least 2 rows of data (standard errors, and an "
                         f"aggregate posterior of more than one component), got {n}")
    if max_points is not None and max_points < 2:
        raise ValueError(f"max_points must be at least 2 (a standard error needs 2 points), "
                         f"got {max_points}")
    if max_points is None or max_points >= n:
        points = torch.arange(n)
    else:
        points = torch.randperm(n, generator=generator(0 if seed is None else seed))[
            :check_positive_int(max_points, "max_points")]
    points = points.to(data.device)

    with seeded(seed, devices=None), torch.no_grad(), eval_mode():
        first = points[:batch_size]
        with minibatch(first, n, data_plate):
            sites = require_contract(model, guide, (data.fetch(first),), None, "information",
                                     data_plate, vectorize).sites
        if sites.enumerated:
            raise PairError(
                f"information: the model enumerates {sites.enumerated[0]!r} and the guide does "
                "not sample it, so it has no posterior to measure rate or mutual information "
                "with; sample it in the guide (e.g. a Categorical with the posterior's "
                "probabilities) to include it")
        q = _aggregate(aggregate, guide, data, sites.guide_latents, data_plate, batch_size)

        def one_batch(idx):
            with minibatch(idx, n, data_plate):
                sample = importance_sample(model, guide, (data.fetch(idx),), None, num_samples,
                                           data_plate, tempered=False, vectorize=vectorize,
                                           require_rsample=False, call="information")
            parts = site_log_probs(sample)
            log_prior = sum(parts["prior"].values())
            log_lik = sum(parts["likelihood"].values()) if parts["likelihood"] else None
            log_q = sum(parts["guide"].values())
            if log_lik is None:
                raise ValueError("the model has no observed site inside the data plate")
            flat = _latents(sample, q.blocks).reshape(-1, q.dim)      # (S * B, D)
            exclude = idx.repeat(num_samples) if estimator == "leave_one_out" else None
            log_agg = q.log_prob(flat, chunk_size, exclude).reshape(num_samples, len(idx))
            out = {"rate": log_q - log_prior, "distortion": -log_lik, "mi": log_q - log_agg,
                   "mkl": log_agg - log_prior}
            if q.has_marginals:
                marg = q.marginal_log_prob(flat, chunk_size, exclude).reshape(num_samples,
                                                                              len(idx), q.dim)
                out["tc"] = log_agg - marg.sum(-1)
                prior_marg = _factorized_prior(sample, q.blocks)
                if prior_marg is not None:  # its moments: (count, mean, M2) of the batch
                    terms = _Moments()
                    terms.add((marg - prior_marg).reshape(-1, q.dim).detach())
                    out["per_dim"] = (torch.tensor(float(terms.count)), terms.mean, terms.m2)
            return {k: (tuple(t.cpu() for t in v) if isinstance(v, tuple)
                        else v.detach().cpu()) for k, v in out.items()}

        # under a process group each rank evaluates every W-th batch (seeded by its index)
        parts = map_batches(one_batch, [points[s:s + batch_size]
                                        for s in range(0, len(points), batch_size)],
                            None, sharded=True, seed=seed)
        rate, distortion, mi, mkl = ([p[k] for p in parts] for k in
                                     ("rate", "distortion", "mi", "mkl"))
        tc = [p["tc"] for p in parts if "tc" in p]
        per_dim = _Moments()
        for count, mean, m2 in (p["per_dim"] for p in parts if "per_dim" in p):
            per_dim.merge(int(count), mean, m2)
        means = q.component_means  # after the draws (a hierarchical guide's are Monte Carlo)
    activity = means.var(0, unbiased=False) if means.shape[0] > 1 else torch.zeros(q.dim)
    terms = {name: torch.cat([t.flatten() for t in parts])
             for name, parts in (("rate", rate), ("distortion", distortion),
                                 ("mutual_information", mi), ("marginal_kl", mkl),
                                 ("total_correlation", tc)) if parts}
    per_dim_kl = per_dim.mean.to(rate[0].dtype) if per_dim.count else None
    nonfinite = {name: int((~torch.isfinite(t)).sum()) for name, t in terms.items()}
    if per_dim_kl is not None:
        nonfinite["marginal_kl_per_dim"] = int((~torch.isfinite(per_dim_kl)).sum())
    nonfinite["unit_activity"] = int((~torch.isfinite(activity)).sum())
    result = Information(
        rate=_estimate(terms["rate"]),
        distortion=_estimate(terms["distortion"]),
        mutual_information=_estimate(terms["mutual_information"]),
        mutual_information_ceiling=math.log(n if estimator == "plug_in" else n - 1),
        marginal_kl=_estimate(terms["marginal_kl"]),
        total_correlation=_estimate(terms["total_correlation"]) if tc else None,
        marginal_kl_per_dim=per_dim_kl,
        marginal_kl_per_dim_se=((per_dim.std() / math.sqrt(per_dim.count)).to(rate[0].dtype)
                                if per_dim.count else None),
        active_units=int((activity > ACTIVE_UNIT_THRESHOLD).sum()),  # nan: not counted
        unit_activity=activity,
        num_data=n, num_points=len(points), num_samples=num_samples, estimator=estimator,
        aggregate=q, nonfinite=nonfinite,
    )
    if result.flagged:
        warnings.warn("information: WARNING: " + result.warning(), stacklevel=2)
    return result


def _aggregate(aggregate, guide, data, guide_latents, data_plate, batch_size):
    """The aggregate posterior to use: ``aggregate`` after checking that it was built on rows
    like ``data`` with the guide's local sites, or one built from the guide."""
    if aggregate is None:
        aggregate = AggregatePosterior.from_guide(guide, data, data_plate=data_plate,
                                                  batch_size=batch_size)
    elif not isinstance(aggregate, AggregatePosterior):
        raise TypeError(f"aggregate must be an AggregatePosterior (from "
                        f"AggregatePosterior.from_guide), got {type(aggregate).__name__}")
    else:
        names = [b.name for b in aggregate.blocks]
        if aggregate.num_data != data.shape[0] or set(names) != set(guide_latents):
            raise ValueError(
                f"aggregate was built on {aggregate.num_data} rows with the sites {names}, but "
                f"data has {data.shape[0]} rows and the guide's local sites are "
                f"{list(guide_latents)}: pass AggregatePosterior.from_guide(guide, data) built "
                "on the same rows with every local site (the default), or None")
    if isinstance(aggregate, SampleAggregatePosterior):
        raise ValueError("information() needs guide densities; this guide's sites (Delta) "
                         "have none: use AggregatePosterior and two-sample tests instead")
    return aggregate


def _latents(sample, blocks) -> torch.Tensor:
    """(S, B, D): the guide's draws laid out as the aggregate posterior's z (``blocks``)."""
    values = [sample.values(b.name) for b in blocks]
    for b, v in zip(blocks, values, strict=True):
        if v.shape[-1] != b.stop - b.start:
            raise ValueError(f"aggregate: site {b.name!r} has {b.stop - b.start} values per "
                             f"datapoint, but the guide draws {v.shape[-1]}: it was built "
                             "with another guide")
    return torch.cat(values, -1)


def _factorized_prior(sample, blocks) -> torch.Tensor | None:
    """(P, B, D) log p(z_i) per coordinate when every latent's prior factorizes over its
    coordinates (an Independent wrapper of a scalar distribution), else None."""
    batch, out = sample.log_weights.shape[1], []
    for d in sample.draws:
        parts = []
        for block in blocks:
            site = d.model_trace.nodes[block.name]
            fn = site["fn"]
            while isinstance(fn, torch.distributions.Independent):
                fn = fn.base_dist
            if fn.event_shape != torch.Size():
                return None
            lp = fn.log_prob(site["value"])
            parts.append(lp.expand(site["value"].shape).reshape(d.num_particles, batch, -1))
        out.append(torch.cat(parts, -1))
    return torch.cat(out)
