"""Two-sample tests for distributions known only through draws."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import check_positive_int
from ..rng import generator


@dataclass(frozen=True)
class TwoSampleResult:
    """Energy distance between two samples and its permutation p-value. ``nonfinite``: the
    rows of each sample holding a value that is not finite; when either is not 0 the test
    has nothing to say and ``statistic`` and ``p_value`` are nan."""

    statistic: float
    p_value: float
    num_permutations: int
    nonfinite: tuple[int, int] = (0, 0)


def _energy(d: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Energy distance (Szekely & Rizzo 2004) for each row of ``labels`` (1 = first sample)
    from the pooled distance matrix d, with unbiased within-sample means; all label vectors
    at once, as quadratic forms: s'Ds, s'D1 and 1'D1."""
    s = labels.to(d.dtype)
    n = s[0].sum()
    m = d.shape[0] - n
    sd = s @ d
    ss = (sd * s).sum(1)
    s1 = sd.sum(1)
    total = d.sum()
    xy = (s1 - ss) / (n * m)
    xx = ss / (n * (n - 1))
    yy = (total - 2 * s1 + ss) / (m * (m - 1))
    return 2 * xy - xx - yy


def energy_test(x: torch.Tensor, y: torch.Tensor, num_permutations: int = 200,
                seed: int = 0) -> TwoSampleResult:
    """Energy-distance two-sample test: statistic 2E|X-Y| - E|X-X'| - E|Y-Y'| (unbiased
    within-sample terms) and a permutation p-value, (1 + #{perm >= observed}) / (1 + P).
    Draws with a value that is not finite (nan, inf) give nan for both, counted in
    ``nonfinite`` (a distance to an infinite draw is not a number: the p-value would be
    the smallest possible, a rejection for the wrong reason).

    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g)
    >>> energy_test(a, b).p_value > 0.05, energy_test(a, b + 1.0).p_value < 0.01
    (True, True)
    >>> b[0, 0] = math.inf
    >>> result = energy_test(a, b)
    >>> math.isnan(result.p_value), result.nonfinite
    (True, (0, 1))
    """
    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"samples must be (n, d) and (m, d), got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if min(len(x), len(y)) < 2:
        raise ValueError(f"each sample needs at least 2 draws (the within-sample distances), "
                         f"got {len(x)} and {len(y)}")
    num_permutations = check_positive_int(num_permutations, "num_permutations")
    nonfinite = tuple(int((~torch.isfinite(s)).any(1).sum()) for s in (x, y))
    if any(nonfinite):
        return TwoSampleResult(math.nan, math.nan, num_permutations, nonfinite)
    pooled = torch.cat([x, y])
    d = torch.cdist(pooled, pooled)
    n, total = len(x), len(pooled)
    observed = _energy(d, (torch.arange(total) < n)[None])[0]
    g = generator(seed)
    exceed = 0
    for start in range(0, num_permutations, 256):  # permuted labels, a block at a time
        block = min(256, num_permutations - start)
        ranks = torch.rand(block, total, generator=g).argsort(1).argsort(1)
        exceed += int((_energy(d, ranks < n) >= observed).sum())
    return TwoSampleResult(float(observed), (1 + exceed) / (1 + num_permutations),
                           num_permutations)
