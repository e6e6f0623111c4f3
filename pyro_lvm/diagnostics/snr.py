"""Gradient signal-to-noise ratio (Rainforth et al. 2018, eq. 5): SNR = |E[g]| / std[g] for
every element of every parameter's gradient estimate, and its average per parameter group
(the model's parameters vs the guide's)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from tqdm import tqdm

from .._checks import check_positive_int
from ..contract import pair_sites, param_roles, reporting_user_errors, run_traced
from ..rng import seeded


@dataclass
class GradientSNR:
    """Gradient statistics over repeated estimates, per parameter (by param-store name).

    ``snr[name]`` is the elementwise |mean| / std. ``groups``, computed from the other fields
    (not an argument), maps "model" and "guide" to the root-mean-square SNR over the elements
    of that group's parameters, with the finite-sample bias removed: for Gaussian gradient
    noise, E[mean^2 / std^2] = (n-1)/(n-3) (SNR^2 + 1/n), so SNR^2 is estimated by
    snr^2 (n-3)/(n-1) - 1/n before averaging over elements (and the average clamped at 0).
    Without this correction an SNR below the noise floor ~1/sqrt(n) would read as
    ~0.8/sqrt(n). Elements whose gradient had no spread are left out: those identically zero
    (no signal) and those deterministic (infinite SNR: no noise). An element whose gradient
    was not finite in some estimate (nan or inf: its mean is not finite) is not left out: it
    is counted in ``nonfinite`` (derived, per parameter) and makes its group's SNR nan.
    Parameters belong to the program that uses them (the guide's: those its distributions
    read; the model's: those its log-densities read other than through the guide's draws);
    parameters read by both form a third group, "shared".

    Example:
        >>> snr = GradientSNR(mean={"w": torch.ones(2)}, std={"w": torch.ones(2)},
        ...                   snr={"w": torch.tensor([2.0, 1.0])}, group_of={"w": "model"},
        ...                   num_samples=100)
        >>> round(snr.groups["model"], 4)  # sqrt(mean(snr^2 * 97/99 - 1/100))
        1.5619
        >>> snr.groups["guide"]
        nan
    """

    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]
    snr: dict[str, torch.Tensor]
    group_of: dict[str, str]
    num_samples: int
    groups: dict[str, float] = field(init=False)  # derived from snr, group_of, num_samples
    nonfinite: dict[str, int] = field(init=False)  # elements whose gradient was not finite

    def __post_init__(self):
        self.groups = {}
        self.nonfinite = {name: int((~torch.isfinite(m)).sum()) for name, m in self.mean.items()}
        for group in sorted({"model", "guide", *self.group_of.values()}):
            squares = []
            if any(self.nonfinite.get(name, 0) for name in self.snr
                   if self.group_of[name] == group):
                self.groups[group] = math.nan  # a gradient that is not a number: no SNR
                continue
            for name, snr in self.snr.items():
                if self.group_of[name] == group:
                    keep = torch.isfinite(snr)
                    n = self.num_samples
                    squares.append((snr[keep] ** 2 * (n - 3) / (n - 1) - 1.0 / n).flatten())
            squares = torch.cat(squares) if squares else torch.zeros(0)
            self.groups[group] = (float(squares.mean().clamp_min(0).sqrt()) if squares.numel()
                                  else math.nan)


def _param_groups(model, guide, args) -> dict[str, str]:
    """Param-store name -> "model", "guide" or "shared", by use
    (:func:`pyro_lvm.contract.param_roles`). Guide sites the model does not have are refused
    by name, whatever the loss (Pyro's own ELBOs only warn about them)."""
    pair_sites(model, guide, args, call="gradient_snr").refuse_extra("gradient_snr")
    with torch.random.fork_rng(), poutine.block():
        guide_trace = run_traced(guide, args, call="gradient_snr", role="guide")
        model_trace = run_traced(poutine.replay(model, trace=guide_trace), args,
                                 call="gradient_snr", role="model")
        guide_trace.compute_log_prob()
        model_trace.compute_log_prob()
    roles = param_roles(model_trace, guide_trace)
    store = pyro.get_param_store()
    groups = {store.param_name(p): role for role in ("model", "guide", "shared")
              for p in getattr(roles, role)}
    if not roles.guide:
        warnings.warn("gradient_snr: the guide has no parameters of its own (none that only "
                      "its distributions read), so the guide's SNR group is nan", UserWarning,
                      stacklevel=3)
    return {name: role for name, role in groups.items() if name is not None}


def gradient_snr(model, guide, data, loss, num_samples: int = 100, seed: int | None = 0,
                 progress: bool = False) -> GradientSNR:
    """Estimate each gradient element's SNR from ``num_samples`` independent estimates of
    ``loss.loss_and_grads(model, guide, data)`` at the current parameters.

    Moments are accumulated in streaming form (Welford), so memory does not grow with
    ``num_samples``; parameters are not changed and their ``.grad`` is left at zero. With
    ``seed`` the draws are reproducible and the global RNG is left untouched.

    Example:
        >>> from pyro_lvm.infer import IWAE
        >>> from pyro_lvm.models import GaussianToy
        >>> toy = GaussianToy(dim=5)
        >>> x = toy.simulate(64)
        >>> toy.set_near_optimum(x)
        >>> snr = gradient_snr(toy.model, toy.guide, x, IWAE(10), num_samples=20)
        >>> sorted(snr.groups)
        ['guide', 'model']
    """
    num_samples = check_positive_int(num_samples, "num_samples")
    if num_samples < 4:
        raise ValueError(f"num_samples must be at least 4 (a spread, and its bias correction), "
                         f"got {num_samples}")
    groups = _param_groups(model, guide, (data,))
    store = pyro.get_param_store()
    count, mean, m2 = 0, {}, {}
    for name in groups:  # a gradient left over from elsewhere must not enter the first draw
        if name in store:
            store.get_param(name).unconstrained().grad = None
    with seeded(seed, devices=None):
        for _ in tqdm(range(num_samples), desc="gradient SNR", disable=not progress,
                      leave=False):
            with reporting_user_errors(f"gradient_snr (estimate {count + 1})", loss):
                loss.loss_and_grads(model, guide, data)
            count += 1
            for name in groups:
                p = store.get_param(name).unconstrained()
                g = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().double()
                if name not in mean:
                    mean[name], m2[name] = torch.zeros_like(g), torch.zeros_like(g)
                delta = g - mean[name]
                mean[name] += delta / count
                m2[name] += delta * (g - mean[name])
                if p.grad is not None:
                    p.grad = None
    std = {k: (v / (count - 1)).sqrt() for k, v in m2.items()}
    snr = {k: torch.where((std[k] == 0) & (mean[k] == 0), torch.nan,
                          mean[k].abs() / std[k]) for k in mean}
    return GradientSNR(mean, std, snr, groups, count)


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x; nan if some y is not positive (an SNR
    estimated as 0, i.e. below the noise floor of the number of samples).

    >>> round(loglog_slope([1, 10, 100], [1.0, 10**0.5, 10.0]), 6)
    0.5
    """
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if not (np.all(ys > 0) and np.all(np.isfinite(ys))):
        return math.nan
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def snr_versus_particles(model, guide, data, make_loss, particles: Sequence[int],
                         num_samples: int = 100, seed: int = 0,
                         progress: bool = False) -> dict:
    """Group SNR for each number of particles K, and its log-log slope against K.

    ``make_loss(K)`` builds the objective (e.g. ``lambda k: IWAE(k, estimator="dreg")``).
    Rainforth et al. (2018, Theorem 1): under IWAE the guide's SNR falls like K^-1/2 and the
    model's rises like K^1/2.

    Example:
        >>> from pyro_lvm.infer import IWAE
        >>> from pyro_lvm.models import GaussianToy
        >>> toy = GaussianToy(dim=3)
        >>> x = toy.simulate(32)
        >>> toy.set_near_optimum(x)
        >>> r = snr_versus_particles(toy.model, toy.guide, x, IWAE, [1, 4], num_samples=10)
        >>> sorted(r)
        ['particles', 'slope', 'snr']
    """
    snr = {"model": [], "guide": []}
    for k in tqdm(particles, desc="SNR against K", disable=not progress, leave=False):
        result = gradient_snr(model, guide, data, make_loss(k), num_samples, seed=seed + k)
        for group in snr:
            snr[group].append(result.groups[group])
    slope = {g: loglog_slope(particles, v) for g, v in snr.items()}
    return {"particles": list(particles), "snr": snr, "slope": slope}


class SNRCallback:
    """A :func:`pyro_lvm.infer.fit` callback that records the gradient SNR of the model's and
    the guide's parameters every ``every`` epochs (to plot SNR across training per objective,
    as in Rainforth et al. 2018, figure 4).

    Example:
        >>> from pyro_lvm.infer import IWAE, fit
        >>> from pyro_lvm.models import GaussianToy
        >>> toy = GaussianToy(dim=3)
        >>> x = toy.simulate(64)
        >>> cb = SNRCallback(toy.model, toy.guide, x[:32], IWAE(8), every=2, num_samples=5)
        >>> _ = fit(toy.model, toy.guide, x, loss=IWAE(8), epochs=4, callbacks=[cb],
        ...         progress=False)
        >>> cb.epochs
        [2, 4]
    """

    def __init__(self, model, guide, data, loss, every: int = 1, num_samples: int = 20,
                 seed: int = 0):
        self.model, self.guide, self.data, self.loss = model, guide, data, loss
        self.every = check_positive_int(every, "every")
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.seed = seed
        self.epochs: list[int] = []
        self.snr: dict[str, list[float]] = {"model": [], "guide": []}

    def __call__(self, epoch: int, history) -> None:
        if epoch % self.every:
            return
        result = gradient_snr(self.model, self.guide, self.data, self.loss, self.num_samples,
                              seed=self.seed + epoch)
        self.epochs.append(epoch)
        for group in self.snr:
            self.snr[group].append(result.groups[group])
