"""Bayes' loop: the self-consistency check of inference code (and its sharper form, SBC).

Draw z_n ~ r(z) (the model's prior, the "regularizer"), x_n ~ p(x | z_n), infer q(z | x_n)
with the guide. If inference is right, the average of the posteriors equals r(z) (Lange,
"Common misconceptions about hierarchical generative models"; the "Bayes' loop"), and, more
sharply, the rank of z_n among draws from q(z | x_n) is uniform (simulation-based
calibration, Talts et al. 2018). A failure means a bug in the inference code, a guide that was
not trained well, or an approximate family that cannot represent the posterior.

On real data the same comparison measures the model's misfit: :func:`prior_gap` estimates
KL(q(z) || r(z)), the gap the texts call eta, and tests q(z) against r(z) with draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats

from .._checks import check_positive_int
from ..contract import PairError, eval_mode, rows_for, run_traced
from ..distributed import gather_objects, in_group
from ..guides import PerDatapointGuide
from ..handlers import map_chunks, minibatch, simulate
from ..infer.importance import require_contract
from ..infer.particles import wrap_particles
from ..rng import generator, seeded
from .information import Estimate, information
from .two_sample import TwoSampleResult, energy_test

#: Rows per share of the posterior draws under a process group (one rank each).
DRAW_CHUNK = 256

#: Bytes of one chunk's (L, rows, D) posterior draws when ``chunk_size`` is None: the rows per
#: chunk are this over L * D * (bytes per value), so peak memory does not grow with N.
DRAW_BUDGET = 32 * 2**20


def _chunk_rows(chunk_size, num_samples: int, z_true: torch.Tensor) -> int:
    """Rows per chunk of posterior draws: ``chunk_size``, or as many as fit in
    :data:`DRAW_BUDGET` (at least 1).

    >>> _chunk_rows(None, 99, torch.zeros(10, 512))  # 32 MiB / (99 * 512 * 4 bytes)
    165
    """
    if chunk_size is not None:
        return check_positive_int(chunk_size, "chunk_size")
    per_row = num_samples * max(1, z_true[:1].numel()) * z_true.element_size()
    return max(1, DRAW_BUDGET // per_row)


def min_rows(num_samples: int) -> int:
    """Fewest simulated rows :func:`bayes_loop` accepts: the chi-square test of the ranks
    needs an expected count of at least 5 in each of its (at least 2) bins (Cochran's rule),
    and the L + 1 ranks split unevenly into 2 bins when L is even.

    >>> min_rows(99), min_rows(2)
    (10, 15)
    """
    smallest_bin = (num_samples + 1) // 2  # ranks in the smaller of 2 bins
    return math.ceil(5 * (num_samples + 1) / smallest_bin)


def _flatten(values: dict, names, lead: int) -> torch.Tensor:
    return torch.cat([values[n].reshape(*values[n].shape[:lead], -1) for n in names], -1)


def _posterior_draws(guide, x, names, num_samples, nesting, data_plate, vectorized):
    """(L, N, D) draws from q(z | x_n) for every simulated datapoint: one vectorized pass, or
    one pass per draw for a pair that does not broadcast over a leading dimension."""
    n = x.shape[0]
    with torch.no_grad(), minibatch(torch.arange(n, device=x.device), n, data_plate):
        if vectorized:
            trace = run_traced(wrap_particles(guide, num_samples, nesting, True), (x,),
                               call="bayes_loop", role="guide")
            return torch.cat([trace.nodes[s]["value"].reshape(num_samples, n, -1)
                              for s in names], -1)
        out = []
        for _ in range(num_samples):
            trace = run_traced(guide, (x,), call="bayes_loop", role="guide")
            out.append(torch.cat([trace.nodes[s]["value"].reshape(n, -1) for s in names], -1))
        return torch.stack(out)


def _ranks(draws: torch.Tensor, z_true: torch.Tensor, generator) -> np.ndarray:
    """Rank of each true value among its L posterior draws, in {0..L}, ties broken uniformly
    at random (Talts et al. 2018, for discrete parameters): #below + U{0..#equal}. Applied
    to consecutive chunks of rows with one generator it gives the ranks of the whole (CPU
    uniforms are drawn serially)."""
    below = (draws < z_true).sum(0)
    ties = (draws == z_true).sum(0)
    return _break_ties(below, ties, generator)


def _break_ties(below: torch.Tensor, ties: torch.Tensor, generator) -> np.ndarray:
    """#below + U{0..#equal}, the uniform from ``generator``."""
    u = torch.rand(below.shape, generator=generator, dtype=torch.float64)
    return (below + (u * (ties + 1)).floor().long().clamp_max(ties)).cpu().numpy()


def _rank_bins(num_samples: int, n: int) -> int:
    """Bins for the rank histogram: about n / 10 expected per bin, at most 20."""
    return int(max(2, min(20, num_samples + 1, n // 10)))


def _chi_square(ranks: np.ndarray, num_samples: int, bins: int) -> float:
    """Chi-square p-value of ranks in {0..L} against the discrete uniform, in ``bins``
    bins with exact expected counts."""
    which = ranks * bins // (num_samples + 1)
    observed = np.bincount(which, minlength=bins)
    expected = np.bincount(np.arange(num_samples + 1) * bins // (num_samples + 1),
                           minlength=bins) / (num_samples + 1) * len(ranks)
    return float(stats.chisquare(observed, expected).pvalue)


@dataclass
class BayesLoopResult:
    """Everything :func:`bayes_loop` measured. ``p_value`` is the Bonferroni combination of
    the rank tests (chi-square and KS per coordinate) and the energy-distance test;
    ``passed`` is ``p_value >= level``. ``mean_z`` and ``log_var_ratio_z`` (standardized
    differences of the aggregate posterior's and the prior's means and log variances) and
    ``effect_mean``, ``variance_ratio`` say by how much they differ. ``nonfinite`` counts the
    values that are not finite (nan, inf) among the posterior draws (L per datapoint), the
    simulated latents and the fresh prior draws: a coordinate with any has nan p-values, and
    then ``p_value`` is nan and ``passed`` False (the loop cannot be judged)."""

    ranks: np.ndarray                 # (N, D), in {0, ..., L}
    num_posterior_samples: int
    rank_bins: int                    # bins of the chi-square test and the histograms
    chi2_p: np.ndarray                # (D,) rank-histogram uniformity
    ks_p: np.ndarray                  # (D,) KS of randomized normalized ranks
    two_sample: TwoSampleResult       # aggregate-posterior draws against fresh prior draws
    mean_z: np.ndarray                # (D,) standardized difference of means
    log_var_ratio_z: np.ndarray       # (D,) standardized log variance ratio
    effect_mean: np.ndarray           # (D,) (mean_q - mean_r) / sd_r
    variance_ratio: np.ndarray        # (D,) var_q / var_r
    p_value: float
    level: float
    passed: bool
    posterior_draws: torch.Tensor = field(repr=False)
    prior_draws: torch.Tensor = field(repr=False)
    coordinate_names: list[str] = field(default_factory=list)
    nonfinite: dict[str, int] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """True when any draw is not finite (:attr:`nonfinite`): not a verdict on the
        inference, a failure of the numbers."""
        return any(self.nonfinite.values())

    def _untested(self) -> list[str]:
        """The coordinates whose rank tests have no p-value (their draws are not finite)."""
        return [name for name, p in zip(self.coordinate_names, self.chi2_p, strict=False)
                if np.isnan(p)]

    def worst(self) -> str:
        """The coordinate that differs most, and by how much (or the coordinates whose draws
        are not finite)."""
        bad = self._untested()
        if self.flagged and bad:
            return f"draws not finite in {', '.join(bad[:4])}" + (" ..." if len(bad) > 4 else "")
        score = np.abs(np.log(self.variance_ratio)) + np.abs(self.effect_mean)
        d = int(np.argmax(score))
        return (f"{self.coordinate_names[d]}: mean shifted by {self.effect_mean[d]:+.3f} prior "
                f"standard deviations, variance ratio q/r = {self.variance_ratio[d]:.3f}")

    def summary(self) -> str:
        """A few sentences: passed or not, the effect sizes, and what a failure can mean (or,
        when draws are not finite, which coordinates and where they came from)."""
        if self.flagged:
            bad = self._untested()
            counts = "; ".join(f"{k} of the {what}" for what, k in
                               (("posterior draws' values", self.nonfinite.get("posterior", 0)),
                                ("simulated latents' values", self.nonfinite.get("simulated", 0)),
                                ("prior draws' values", self.nonfinite.get("prior", 0))) if k)
            return (f"Bayes' loop NOT JUDGED: values that are not finite (nan or inf): {counts}"
                    + (f", in the coordinates {', '.join(bad[:8])}"
                       + (f" and {len(bad) - 8} more" if len(bad) > 8 else "") if bad else "")
                    + ". Their tests have no p-value (nan), and this says nothing about the "
                    "guide's family: the guide (posterior draws) or the model's prior "
                    "(simulated and prior draws) produced numbers that are not numbers. Look "
                    "for a scale that is 0 or inf, or parameters that diverged.")
        head = (f"Bayes' loop {'passed' if self.passed else 'FAILED'} at level {self.level} "
                f"(combined p = {self.p_value:.3g}; energy-distance test of q(z) against r(z): "
                f"p = {self.two_sample.p_value:.3g}). Largest difference: {self.worst()}.")
        if self.passed:
            return head
        return head + (
            " The average posterior does not reproduce the prior: either the inference code "
            "has a bug (a wrong scale, a forgotten offset), the guide was not trained well on "
            "this kind of data, or the guide's family cannot represent the true posterior (an "
            "approximate family such as a mean-field guide on a correlated posterior fails "
            "this check too, without any bug): compare with a richer guide before hunting bugs. "
            "The rank histograms' shapes say how q(z|x) is wrong (∪: too narrow, ∩: too wide, "
            "a slope: biased); tutorials/03_bayes_loop.ipynb explains them.")

    def plot(self, max_dims: int = 6):
        """Rank histograms with a 99% band for a uniform histogram, ECDF differences of the
        normalized ranks with a 99% band, and prior against aggregate-posterior marginals, for
        the ``max_dims`` least uniform coordinates (all when there are no more); see
        :func:`~pyro_lvm.diagnostics.plots.bayes_loop_caption` for a caption."""
        from .plots import plot_bayes_loop

        return plot_bayes_loop(self, max_dims=max_dims)


def bayes_loop(model, guide, data, num_posterior_samples: int = 99, refit=None,
               level: float = 0.01, seed: int | None = 0, data_plate: str = "data",
               num_permutations: int = 200, max_test_points: int = 2000,
               vectorize: bool | str = "auto", obs_site: str | None = None,
               chunk_size: int | None = None) -> BayesLoopResult:
    """Simulate from the model, infer with the guide, and test that the posteriors average
    back to the prior (per-coordinate SBC ranks, and an energy-distance test of aggregate
    posterior draws against fresh prior draws).

    Args:
        data: fixes only the shape of one simulated data set (its values are replaced).
        num_posterior_samples: L draws from q(z | x_n) per simulated datapoint (ranks 0..L).
        refit: for a non-amortized guide, ``refit(x_sim)`` fits the guide to the simulated
            data (e.g. a few epochs of :func:`pyro_lvm.infer.fit`) before the draws.
        level: significance level of ``passed``; the tests are Bonferroni-combined.
        max_test_points: the energy-distance test uses at most this many draws per side
            (its distance matrix is quadratic in them); the rank tests use every datapoint.
        vectorize: "auto", True or False: draw the L posterior samples in one vectorized
            pass (after a check that the pair allows it) or one at a time.
        obs_site: the observation site that is the data, needed only when the model observes
            more than one site (``pyro.factor`` terms do not count).
        chunk_size: rows whose L posterior draws are held at once (peak memory grows with it,
            not with N); None: as many as fit in :data:`DRAW_BUDGET` (32 MiB), or
            :data:`DRAW_CHUNK` under a process group. The draws come from the random stream
            chunk after chunk, so a different chunking gives other draws of the same
            distribution; with N rows in one chunk they are the unchunked ones.

    The data are simulated by :func:`pyro_lvm.handlers.simulate` (the simulator of
    :func:`pyro_lvm.datasets.from_model`); the simulated x is the model's observed site,
    found from the trace, and must have the shape of ``data``.

    Simulation and posterior draws run every nn.Module in eval mode (``refit`` trains as it
    likes). Discrete latents (a Categorical guide) are fine: tied ranks are broken uniformly at
    random (Talts et al. 2018). Global latents are refused before anything is computed, and
    so is data with fewer rows than :func:`min_rows` (10 for the default L = 99).

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> result = bayes_loop(ppca.model, ppca.exact_posterior, torch.zeros(300, 4))
        >>> result.passed
        True
    """
    data = rows_for(data, model, guide).materialize()  # the template of the simulated data
    num_posterior_samples = check_positive_int(num_posterior_samples, "num_posterior_samples")
    if num_posterior_samples < 2:
        raise ValueError(f"num_posterior_samples must be at least 2, got "
                         f"{num_posterior_samples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    max_test_points = check_positive_int(max_test_points, "max_test_points")
    n, big_l = data.shape[0], num_posterior_samples
    if n < min_rows(big_l):
        raise ValueError(
            f"bayes_loop needs at least {min_rows(big_l)} rows of data with "
            f"num_posterior_samples={big_l} (the chi-square test of the ranks needs an expected "
            f"count of 5 in each of its bins), got {n}: pass a larger template")
    if refit is None and isinstance(getattr(guide, "__self__", guide), PerDatapointGuide):
        raise PairError(f"bayes_loop: {type(getattr(guide, '__self__', guide)).__name__} "
                        "holds posteriors of its own training "
                        "points, not of the simulated ones; pass refit=lambda x: fit(model, "
                        "guide, x, ...) to fit it to the simulated data first")
    probe = torch.arange(min(n, DRAW_CHUNK), device=data.device)  # the checks need a few rows
    with minibatch(probe, n, data_plate):
        info = require_contract(model, guide, (data[probe],), None, "bayes_loop", data_plate,
                                vectorize)
    latents = info.sites.local_latents
    if info.sites.enumerated:
        raise PairError(
            f"bayes_loop: the model enumerates {info.sites.enumerated[0]!r} and the guide does "
            "not sample it, so there is no posterior draw to rank against the simulated value; "
            "add the site to the guide (e.g. a Categorical with the posterior's probabilities)")
    if seed is None and in_group():  # the same simulation on every rank: rank 0's seed
        seed = gather_objects(int(torch.randint(2**62, ())), "bayes_loop", "the seed")[0]
    # devices=None: every CUDA device's RNG is restored too (torch.manual_seed seeds them all)
    with seeded(seed, devices=None):
        with torch.no_grad(), eval_mode():
            sim = simulate(model, data)
        x_sim = sim.data(like=data, obs_site=obs_site, call="bayes_loop")
        z_true = _flatten(sim, latents, 1)
        if refit is not None:
            refit(x_sim)  # e.g. pyro_lvm.infer.fit(..., progress=True): its own progress bar
        rows = _chunk_rows(chunk_size if chunk_size is not None or not in_group()
                           else DRAW_CHUNK, big_l, z_true)
        ties = generator(1 if seed is None else seed + 1)
        ranks = np.empty(tuple(z_true.shape), dtype=np.int64)  # (N, D) in 0..L, filled by chunk

        def one_chunk(idx):
            """The chunk's first posterior draw and its ranks (or, under a process group, its
            rank counts: the ties are broken below, in order): (L, rows, D) at most at once."""
            draws = _posterior_draws(guide, x_sim[idx], latents, big_l, info.sites.nesting,
                                     data_plate, info.vectorized)
            z = z_true[idx]
            if draws.shape[1:] != z.shape:
                raise PairError(f"bayes_loop: the guide's draws have shape "
                                f"{tuple(draws.shape[1:])} per sample but the model's latents "
                                f"have {tuple(z.shape)}")
            z, first = z.to(draws), draws[0].clone()  # a view of draws[0] would keep all L
            bad = (~torch.isfinite(draws)).sum((0, 1)).cpu()  # (D,) values not finite
            if in_group():  # counts need 2 bytes a value while L < 2**15
                small = torch.int16 if big_l < 2**15 else torch.int32
                counts = ((draws < z).sum(0).to(small).cpu(), (draws == z).sum(0).to(small).cpu())
                return first.cpu(), counts, bad
            start = int(idx[0])
            ranks[start:start + len(idx)] = _ranks(draws, z, ties)
            return first, None, bad

        with eval_mode():
            # rows 0..N-1 in chunks; under a process group each chunk runs on one rank,
            # seeded by the chunk's index
            chunks = map_chunks(one_chunk, n, rows, x_sim.device, data_plate, sharded=True,
                                seed=seed)
        with torch.no_grad(), eval_mode():
            prior = _flatten(simulate(model, data), latents, 1)
        u = torch.rand(z_true.shape, dtype=torch.float64)

    first = torch.cat([c[0].to(x_sim.device) for c in chunks])   # one draw per datapoint
    if in_group():
        below, equal = (torch.cat([c[1][i] for c in chunks]).long() for i in (0, 1))
        ranks = _break_ties(below, equal, ties)
    dims = ranks.shape[1]
    bins = _rank_bins(big_l, n)
    # a coordinate whose draws or simulated values are not all finite has no ranks to test
    not_finite = {"posterior": sum(c[2] for c in chunks),
                  "simulated": (~torch.isfinite(z_true)).sum(0).cpu(),
                  "prior": (~torch.isfinite(prior)).sum(0).cpu()}
    untestable = ((not_finite["posterior"] + not_finite["simulated"]) > 0).numpy()
    chi2_p = np.array([math.nan if untestable[d] else _chi_square(ranks[:, d], big_l, bins)
                       for d in range(dims)])
    u = u.numpy()  # the normalized ranks (ranks + u) / (L + 1) a coordinate at a time
    ks_p = np.array([math.nan if untestable[d] else
                     stats.kstest((ranks[:, d] + u[:, d]) / (big_l + 1), "uniform").pvalue
                     for d in range(dims)])
    aggregate = first.double().cpu()
    prior_d = prior.double().cpu()
    # the energy test's pooled distance matrix is (2m)^2: at most max_test_points per side
    m = min(n, max_test_points)
    test = energy_test(aggregate[:m], prior_d[:m], num_permutations,
                       seed=0 if seed is None else seed)
    mq, mr = aggregate.mean(0), prior_d.mean(0)
    vq, vr = aggregate.var(0), prior_d.var(0)
    mean_z = ((mq - mr) / (vq / n + vr / n).sqrt()).numpy()
    log_ratio = (vq / vr).log()
    log_var_z = (log_ratio / math.sqrt(2 / (n - 1) + 2 / (n - 1))).numpy()
    # The combined test: ranks (chi-square and KS per coordinate) and the two-sample test,
    # Bonferroni-corrected. The standardized mean and variance differences are effect sizes
    # that say by how much, not further tests.
    all_p = np.concatenate([chi2_p, ks_p, [test.p_value]])
    # nan (a test without a p-value) stays nan: Python's min(1.0, nan) would say 1.0
    p_value = float(np.minimum(1.0, all_p.min() * len(all_p)))
    names = [f"{s}[{i}]" for s in latents for i in range(math.prod(sim[s].shape[1:]))]
    return BayesLoopResult(
        ranks=ranks, num_posterior_samples=big_l, rank_bins=bins, chi2_p=chi2_p, ks_p=ks_p,
        two_sample=test,
        mean_z=mean_z, log_var_ratio_z=log_var_z,
        effect_mean=((mq - mr) / vr.sqrt()).numpy(), variance_ratio=(vq / vr).numpy(),
        p_value=p_value, level=level, passed=p_value >= level,
        posterior_draws=aggregate, prior_draws=prior_d, coordinate_names=names,
        nonfinite={k: int(v.sum()) for k, v in not_finite.items()})


@dataclass
class PriorGap:
    """The gap between the regularizer r(z) and the data-averaged posterior q(z) on real
    data: KL(q(z) || r(z)) with its standard error (the texts' eta) and a two-sample test."""

    kl: Estimate
    two_sample: TwoSampleResult
    posterior_draws: torch.Tensor = field(repr=False)
    prior_draws: torch.Tensor = field(repr=False)

    @property
    def flagged(self) -> bool:
        """True when the KL or a draw of the test is not finite: then neither is a number to
        use (``two_sample.nonfinite`` counts the draws)."""
        return not math.isfinite(self.kl.value) or any(self.two_sample.nonfinite)


def prior_gap(model, guide, data, num_permutations: int = 200, max_points: int | None = 2000,
              seed: int | None = 0, data_plate: str = "data",
              vectorize: bool | str = "auto") -> PriorGap:
    """KL(q(z) || r(z)) on real data (via :func:`information`'s aggregate-posterior
    estimator) and an energy-distance test of aggregate-posterior draws against prior draws.

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> gap = prior_gap(ppca.model, ppca.exact_posterior, ppca.sample(200))
        >>> float(gap.kl) < 0.1
        True
    """
    from .aggregate import sample_prior

    data = rows_for(data, model, guide)
    if data.shape[0] < 2:
        raise ValueError(f"prior_gap needs at least 2 rows of data (a KL with a standard "
                         f"error, and two samples to test), got {data.shape[0]}")
    info = information(model, guide, data, max_points=max_points, seed=seed,
                       data_plate=data_plate, vectorize=vectorize)
    q = info.aggregate  # built by information() on these rows
    m = min(len(data), max_points or len(data))
    with seeded(seed, devices=None), eval_mode():
        post = q.sample(m).double()
        prior = sample_prior(model, data.fetch(torch.arange(m)), q.blocks).double()
    test = energy_test(post, prior, num_permutations, seed=0 if seed is None else seed)
    return PriorGap(info.marginal_kl, test, post, prior)
