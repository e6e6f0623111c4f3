"""Importance-sampled evidence: per-datapoint log p(x) with its reliability diagnostics.

    log p_hat(x_n) = logsumexp_s log w_sn - log S,   w_sn = p(x_n, z_s) / q(z_s | x_n)

(Burda et al. 2016; a lower bound in expectation that tightens as S grows). Per datapoint:
the effective sample size ESS = (sum w)^2 / sum w^2 (Kong 1992), and the Pareto k-hat of the
weights' upper tail (Vehtari et al. 2015; Yao et al. 2018): k-hat > 0.7 means the variance of
the weights is effectively infinite and the estimate is not to be trusted.

Particles are drawn in passes, one vectorized draw each; their log-weights are folded into
running sums and the weights' upper tail every ``WEIGHTS_PER_REDUCTION`` weights, so memory
does not grow with the number of particles. Observed sites outside the data plate (which
belong to no datapoint) are not part of log p(x_n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro.ops.stats import fit_generalized_pareto

from .._checks import check_positive_int
from ..contract import eval_mode, rows_for
from ..handlers import map_chunks, minibatch
from ..infer.importance import importance_sample, require_contract
from ..rng import seeded

#: Pareto k-hat above which an importance-sampled estimate is unreliable: its variance is
#: infinite or its convergence too slow in practice (Vehtari et al. 2015, PSIS).
KHAT_THRESHOLD = 0.7


@dataclass
class Evidence:
    """Per-datapoint results of :func:`log_likelihood`, as CPU tensors whatever the data's
    device (they are small; summaries and plots read them there)."""

    log_px: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    num_particles: int

    @property
    def nonfinite(self) -> torch.Tensor:
        """Datapoints with a number that is not finite: log p(x) or ESS nan or infinite, or
        k-hat nan or +inf (k-hat -inf is finite weights all equal: no tail at all)."""
        return (~torch.isfinite(self.log_px) | ~torch.isfinite(self.ess) | self.khat.isnan()
                | (self.khat == math.inf))

    @property
    def flagged(self) -> torch.Tensor:
        """Datapoints whose k-hat exceeds ``KHAT_THRESHOLD`` (unreliable), could not be estimated
        (nan: too few particles for a tail fit, or weights that are not numbers), or with any
        number that is not finite (:attr:`nonfinite`).

        >>> nan = float("nan")
        >>> Evidence(torch.tensor([0., nan]), torch.tensor([9., nan]),
        ...          torch.tensor([0.1, -math.inf]), 10).flagged.tolist()
        [False, True]
        """
        return ~(self.khat <= KHAT_THRESHOLD) | self.nonfinite

    def summary(self) -> dict:
        """Mean log p(x), ESS quantiles, the share of flagged datapoints and the share with a
        number that is not finite (``nonfinite_fraction``: then the means are not finite
        either and the estimate is not to be used).

        >>> Evidence(torch.zeros(2), torch.ones(2), torch.tensor([0.1, 0.9]), 10).summary()[
        ...     "flagged_fraction"]
        0.5
        """
        return {
            "mean_log_px": float(self.log_px.mean()),
            "se_log_px": float(self.log_px.std() / math.sqrt(len(self.log_px)))
            if len(self.log_px) > 1 else math.nan,
            "ess_median": float(self.ess.median()),
            "ess_min": float(self.ess.min()),
            "khat_max": float(self.khat.max()),
            "flagged_fraction": float(self.flagged.double().mean()),
            "nonfinite_fraction": float(self.nonfinite.double().mean()),
            "num_particles": self.num_particles,
        }


def tail_size(num_particles: int) -> int:
    """M = min(S/5, 3 sqrt(S)): how many of S weights form the fitted tail (Vehtari et al.).

    >>> tail_size(5000)
    212
    """
    return int(min(0.2 * num_particles, 3 * math.sqrt(num_particles)))


def pareto_khat(log_weights: torch.Tensor, num_particles: int | None = None) -> float:
    """k-hat of the generalized Pareto fitted to the upper tail of one datapoint's weights.

    The tail is the M = min(S/5, 3 sqrt(S)) largest weights above the next one (Vehtari et al.
    2015, section 3), S = ``num_particles`` (default: all of ``log_weights``, which may then be
    just the largest M + 1 of them). Fewer than 5 tail weights (S < 25) give nan, and so do
    log-weights that are nan or +inf (no tail can be fitted to them); weights equal up to
    rounding (log-weights within 1e-4) give -inf: there is no tail at all.

    >>> g = torch.Generator().manual_seed(0)
    >>> heavy = (1 / torch.rand(4000, generator=g)).log()  # Pareto(1, 1): k = 1
    >>> light = torch.randn(4000, generator=g) * 0.1
    >>> pareto_khat(heavy) > 0.7, pareto_khat(light) < 0.5
    (True, True)
    """
    lw = log_weights.detach().double().flatten()
    m = tail_size(lw.numel() if num_particles is None else num_particles)
    if m < 5 or lw.numel() < m + 1:
        return math.nan
    if lw.isnan().any() or (lw == math.inf).any():  # not weights: k-hat is not known
        return math.nan
    top = lw.topk(m + 1).values
    if not top[0] - top[m] > 1e-4:  # equal weights up to rounding: no tail at all
        return -math.inf
    excess = torch.expm1(top[:m] - top[m])
    return float(fit_generalized_pareto(excess)[0])


#: (particle, datapoint) pairs per vectorized pass when ``particle_chunk`` is not given: the
#: model's per-pair intermediates (a decoder's hidden layer) stay a few MiB, below the size
#: from which the C allocator maps fresh pages for every tensor (glibc: 32 MiB), which
#: otherwise costs as much system time as the arithmetic (benchmarks/log_likelihood_speed.py).
PAIRS_PER_PASS = 16384

#: log-weights held before they are reduced (the running logsumexps and the tail): the
#: reductions run once per this many weights, not once per pass, and memory stays bounded.
WEIGHTS_PER_REDUCTION = 2**20


def log_likelihood(model, guide, data, num_particles: int = 5000, chunk_size: int = 256,
                   particle_chunk: int | None = None, data_plate: str = "data",
                   seed: int | None = 0, progress: bool = False,
                   vectorize: bool | str = "auto") -> Evidence:
    """Importance-sampled log p(x) per datapoint, with ESS and Pareto k-hat. Scales a model
    puts on its sites (e.g. a beta-VAE's KL weight) are ignored: this is the model's own
    log p(x). Every nn.Module runs in eval mode (no dropout noise; BatchNorm's running
    statistics, left unchanged). Guide sites need no rsample here (no gradient is taken): a
    Categorical guide is fine, and model latents marked ``infer={"enumerate": "parallel"}``
    that the guide does not sample are summed out exactly.

    Each chunk of rows is read once; its particles are drawn in passes of ``particle_chunk``
    (default: ``PAIRS_PER_PASS // rows``, at least 1), and their log-weights reduced once per
    ``WEIGHTS_PER_REDUCTION``.

    Args:
        num_particles: S, importance samples per datapoint.
        chunk_size: datapoints per chunk.
        particle_chunk: particles per pass (one vectorized draw), or None for the default
            above; memory ~ rows x particle_chunk x the model's per-pair intermediates.
        vectorize: "auto" (check once that the pair broadcasts over a leading particle
            dimension, else evaluate particles one at a time), True or False.

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> x = ppca.sample(5)
        >>> ev = log_likelihood(ppca.model, ppca.exact_posterior, x, num_particles=100)
        >>> bool(torch.allclose(ev.log_px.float(), ppca.log_likelihood(x), atol=1e-4))
        True
        >>> ev.ess.round().tolist()
        [100.0, 100.0, 100.0, 100.0, 100.0]
    """
    data = rows_for(data, model, guide)
    num_particles = check_positive_int(num_particles, "num_particles")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if particle_chunk is not None:
        particle_chunk = check_positive_int(particle_chunk, "particle_chunk")
    n = data.shape[0]
    tail = tail_size(num_particles) + 1

    def one_chunk(idx):
        x = data.fetch(idx)
        per_pass = particle_chunk or max(1, PAIRS_PER_PASS // len(idx))
        reduce_every = max(per_pass, WEIGHTS_PER_REDUCTION // len(idx))
        stats, held = None, []
        for p0 in range(0, num_particles, per_pass):
            p = min(per_pass, num_particles - p0)
            held.append(importance_sample(
                model, guide, (x,), None, p, data_plate, tempered=False, vectorize=vectorize,
                require_rsample=False, call="log_likelihood", keep_draws=False).log_weights)
            if sum(len(lw) for lw in held) >= reduce_every or p0 + p == num_particles:
                stats = _reduce(stats, torch.cat(held).double(), tail)
                held = []
        lse, lse2, top = stats
        return (lse - math.log(num_particles), (2 * lse - lse2).exp(),
                [pareto_khat(row, num_particles) for row in top])

    with seeded(seed), torch.no_grad(), eval_mode():
        first = torch.arange(min(chunk_size, n), device=data.device)
        with minibatch(first, n, data_plate):
            require_contract(model, guide, (data.fetch(first),), None, "log_likelihood", data_plate,
                             vectorize)
        chunks = map_chunks(one_chunk, n, chunk_size, data.device, data_plate,
                            progress=progress, desc="log p(x)", sharded=True, seed=seed)
    log_px, ess, khat = zip(*chunks, strict=True)
    khat = [k for part in khat for k in part]
    # per-datapoint results live on the CPU whatever the data's device (small; plots and
    # summaries read them there; gathered shares come back there too)
    return Evidence(torch.cat(log_px).cpu(), torch.cat(ess).cpu(),
                    torch.tensor(khat, dtype=torch.double), num_particles)


def _reduce(stats, lw: torch.Tensor, tail: int):
    """Fold log-weights ``lw`` (P, B) into the running statistics of :func:`log_likelihood`
    (float64): logsumexp w, logsumexp w^2 (both from one exp of lw - max), and the ``tail``
    largest log w per datapoint."""
    top = lw.detach().amax(0)
    shift = top.masked_fill(~torch.isfinite(top), 0.0).double()  # all -inf: -inf, as logsumexp
    w = (lw.double() - shift).exp_()
    lse, lse2 = shift + w.sum(0).log(), 2 * shift + w.square_().sum(0).log()
    largest = lw.T.topk(min(tail, lw.shape[0]), dim=1).values.double()
    if stats is None:
        return lse, lse2, largest
    merged = torch.cat([stats[2], largest], 1)
    return (torch.logaddexp(stats[0], lse), torch.logaddexp(stats[1], lse2),
            merged.topk(min(tail, merged.shape[1]), dim=1).values)
