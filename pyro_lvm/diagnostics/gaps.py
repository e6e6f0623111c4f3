"""Where the bound's gap comes from: the approximation and amortization gaps of a guide.

For each datapoint x (Cremer, Li & Duvenaud 2018, "Inference Suboptimality in Variational
Autoencoders"):

- log p(x) - ELBO(q_phi(z|x)) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_phi(z|x))]
  = approximation gap + amortization gap,

where q* is the best member of the guide's own family for that datapoint, found here by
optimizing the family's parameters lambda for the datapoint alone (classical VI, the "(I)"
step of Friedman's text), starting at the encoder's output lambda_phi(x). The approximation
gap is what the family cannot represent (a richer family shrinks it); the amortization gap is
what the encoder leaves on the table (a larger encoder, longer training, or refining lambda
per datapoint shrinks it).

The family and its lambda come from pyro_lvm's guides (``guide.family``; Normal, full-covariance
Normal, flows) or, for any other guide, from the distributions it samples: a (diagonal)
Normal or a MultivariateNormal per local site, possibly ``.to_event`` and pushed through
parameter-free transforms (``biject_to``), as a VAE's encoder writes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from .._checks import check_positive_float, check_positive_int
from ..contract import PairError, data_frame, eval_mode, rows_for, run_traced, sample_sites
from ..figures import subplots
from ..guides import lower_cholesky
from ..handlers import map_batches, minibatch
from ..infer.importance import importance_sample
from ..rng import seeded
from .evidence import pareto_khat
from .information import Estimate, _estimate

__all__ = ["InferenceGaps", "inference_gaps"]

#: A datapoint whose refinement still rose by more than this (nats) from the third to the last
#: quarter of the steps (the averages of their iterates, on the same draws), and by more than
#: twice the standard error of that gain, has not converged: its best member is a lower bound.
RISE_TOLERANCE = 0.01


@dataclass
class InferenceGaps:
    """Per-datapoint results of :func:`inference_gaps` (nats; tensors of shape (N,)).

    ``log_px`` (importance-sampled with the best refined member as proposal; ``ess`` and
    ``khat`` say how reliable), ``elbo`` (the guide as given), ``elbo_best`` (the best member
    of its family per datapoint), ``elbo_richer`` (the best member of ``richer``'s family,
    or None), ``rise`` (how much each refined ELBO still rose from the third to the last
    quarter of the steps) and ``converged`` (no significant rise above
    :data:`RISE_TOLERANCE`, for the guide's family and the richer one).
    """

    log_px: torch.Tensor
    elbo: torch.Tensor
    elbo_best: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    rise: torch.Tensor
    converged: torch.Tensor
    num_particles: int
    steps: int
    elbo_richer: torch.Tensor | None = None
    richer_rise: torch.Tensor | None = field(default=None, repr=False)

    @property
    def approximation_gap(self) -> torch.Tensor:
        """log p(x) - ELBO(q*): what the family cannot represent."""
        return self.log_px - self.elbo_best

    @property
    def amortization_gap(self) -> torch.Tensor:
        """ELBO(q*) - ELBO(q_phi): what the encoder leaves on the table."""
        return self.elbo_best - self.elbo

    @property
    def total_gap(self) -> torch.Tensor:
        """log p(x) - ELBO(q_phi) = approximation gap + amortization gap."""
        return self.log_px - self.elbo

    @property
    def richer_approximation_gap(self) -> torch.Tensor | None:
        """log p(x) - ELBO(best member of the richer family), or None."""
        return None if self.elbo_richer is None else self.log_px - self.elbo_richer

    @property
    def nonfinite(self) -> torch.Tensor:
        """Datapoints with a number that is not finite (log p(x), an ELBO or the ESS nan or
        infinite, k-hat nan or +inf): their gaps are not numbers to report."""
        khat = self.khat.detach().cpu()
        bad = khat.isnan() | (khat == math.inf)
        for v in (self.log_px, self.elbo, self.elbo_best, self.ess, self.elbo_richer):
            if v is not None:
                bad = bad | ~torch.isfinite(v.detach().cpu())
        return bad

    @property
    def flagged(self) -> torch.Tensor:
        """Datapoints whose log p(x) is unreliable (k-hat above 0.7 or not estimated) or with
        a number that is not finite (:attr:`nonfinite`)."""
        return ~(self.khat.detach().cpu() <= 0.7) | self.nonfinite

    def estimates(self) -> dict[str, Estimate]:
        """Means over the datapoints with their standard errors.

        >>> g = InferenceGaps(*(torch.tensor([v, v]) for v in (-1.0, -1.5, -1.2, 9.0, 0.1,
        ...                     0.0)), torch.tensor([True, True]), 100, 10)
        >>> {k: round(v.value, 3) for k, v in g.estimates().items()}["amortization_gap"]
        0.3
        """
        out = {"log_px": self.log_px, "elbo": self.elbo, "elbo_best": self.elbo_best,
               "approximation_gap": self.approximation_gap,
               "amortization_gap": self.amortization_gap, "total_gap": self.total_gap}
        if self.elbo_richer is not None:
            out["elbo_richer"] = self.elbo_richer
            out["richer_approximation_gap"] = self.richer_approximation_gap
        return {k: _estimate(v) for k, v in out.items()}

    def summary(self) -> str:
        """Which gap dominates, and what to do about it; unconverged refinements and an
        unreliable log p(x) are said first."""
        e = self.estimates()
        n = len(self.log_px)
        lines = [f"Inference gaps over {n} datapoints (nats, mean ± standard error):"]
        bad = int(self.nonfinite.sum())
        if bad:
            lines.append(f"  WARNING: {bad} of {n} datapoints have numbers that are not finite "
                         "(nan or inf in log p(x), an ELBO, the ESS or k-hat): the means below "
                         "are not numbers to use; check the guide's and the model's parameters.")
        lines += [f"  total gap log p(x) - ELBO: {e['total_gap']!r}",
                  f"  approximation gap (family): {e['approximation_gap']!r}",
                  f"  amortization gap (encoder): {e['amortization_gap']!r}"]
        if self.elbo_richer is not None:
            lines.append(f"  approximation gap of the richer family: "
                         f"{e['richer_approximation_gap']!r}")
        stuck = int((~self.converged).sum())
        if stuck:
            lines.append(
                f"  WARNING: the refinement of {stuck} of {n} datapoints had not converged (its "
                f"ELBO still rose by up to {float(self.rise.max()):.3f} nats from the third to "
                "the last quarter of the steps): for them the approximation gap is "
                "overestimated and the amortization gap underestimated; raise steps=.")
        flagged = float((~(self.khat <= 0.7)).double().mean())
        if flagged > 0.1:
            lines.append(f"  WARNING: log p(x) is unreliable for {100 * flagged:.0f}% of the "
                         "datapoints (Pareto k-hat > 0.7): use more particles.")
        approx, amort = e["approximation_gap"].value, e["amortization_gap"].value
        noise = 2 * max(e["approximation_gap"].se, e["amortization_gap"].se)
        if not (math.isfinite(approx) and math.isfinite(amort)):
            lines.append("  Which gap dominates cannot be told: the gaps are not finite.")
        elif max(approx, amort) < max(0.01, noise):
            lines.append("  Both gaps are negligible (within 0.01 nats or two standard errors "
                         "of 0): the guide is as good as its family, and the family fits the "
                         "posterior.")
        elif approx >= amort:
            lines.append("  The approximation gap dominates: the family cannot represent the "
                         "posterior. Use a richer family (AmortizedMultivariateNormal, "
                         "AmortizedFlow) or an importance-weighted objective.")
        else:
            lines.append("  The amortization gap dominates: the encoder does not find the best "
                         "member of its family. Train longer, enlarge the encoder, or refine "
                         "lambda per datapoint at test time.")
        return "\n".join(lines)

    def plot(self, title: str | None = None):
        """Histograms of the two gaps per datapoint (and of the richer family's
        approximation gap), with their means marked."""
        gaps = {"approximation gap": self.approximation_gap,
                "amortization gap": self.amortization_gap}
        if self.elbo_richer is not None:
            gaps["approximation gap, richer family"] = self.richer_approximation_gap
        fig, axes = subplots(4.0 * len(gaps), 3.2, ncols=len(gaps))
        axes = np.atleast_1d(axes)
        for ax, (label, g) in zip(axes, gaps.items(), strict=True):
            values = g.detach().double().cpu().numpy()
            ax.hist(values, bins=30, color="C0" if "amort" not in label else "C1")
            ax.axvline(values.mean(), color="k", ls="--", lw=1,
                       label=f"mean {values.mean():.3f}")
            ax.set_xlabel(f"{label} (nats)")
            ax.set_ylabel("datapoints")
            ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig


# -- the family of a guide -------------------------------------------------------------------
@dataclass
class _Family:
    names: list[str]
    plate_dim: int
    lam: torch.Tensor                                       # (B, P) the encoder's lambda
    distributions: Callable[[torch.Tensor], dict[str, dist.Distribution]]


def _family(guide, x: torch.Tensor, data_plate: str) -> _Family:
    """The guide's family at the rows ``x`` (inside the caller's minibatch handler)."""
    owner = getattr(guide, "__self__", guide)
    with torch.no_grad():
        trace = run_traced(guide, (x,), call="inference_gaps", role="guide")
    sites = [(name, s) for name, s in sample_sites(trace) if not s["is_observed"]]
    for name, s in sites:
        if data_frame(s, data_plate) is None:
            raise PairError(f"inference_gaps: guide site {name!r} is outside pyro.plate("
                            f"{data_plate!r}): the gaps are per datapoint, of local latents")
    plate_dim = data_frame(sites[0][1], data_plate).dim
    names = [name for name, _ in sites]
    if hasattr(owner, "family") and hasattr(owner, "family_params") and (
            guide is owner or getattr(guide, "__func__", None) is type(owner).forward):
        idx = torch.arange(x.shape[0], device=x.device)
        with torch.no_grad():
            lam = owner.family_params(x, _subsample(trace, data_plate, idx))
        return _Family(names, plate_dim, lam.detach(), owner.family.distributions)
    parts = [_parse(name, s["fn"], x.shape[0]) for name, s in sites]
    sizes = [p[0].shape[1] for p in parts]

    def distributions(lam):
        out, offset = {}, 0
        for (name, _), (_, rebuild), size in zip(sites, parts, sizes, strict=True):
            out[name] = rebuild(lam[:, offset:offset + size])
            offset += size
        return out

    return _Family(names, plate_dim, torch.cat([p[0] for p in parts], 1), distributions)


def _subsample(trace, data_plate, default):
    for node in trace.nodes.values():
        if node["type"] == "sample" and node["name"] == data_plate and node["value"] is not None:
            return node["value"]
    return default


def _parse(name: str, fn, batch: int):
    """(lambda (B, P), rebuild(lambda) -> distribution) of a Normal / MultivariateNormal site,
    possibly Independent and transformed by parameter-free transforms."""
    transforms = []
    if isinstance(fn, torch.distributions.TransformedDistribution):
        transforms = list(fn.transforms)
        if any(isinstance(t, torch.nn.Module) for t in transforms):
            raise PairError(
                f"inference_gaps: guide site {name!r} is transformed by a learned transform "
                f"({type(next(t for t in transforms if isinstance(t, torch.nn.Module))).__name__}"
                "): its family is not known from the distribution alone; use pyro_lvm's "
                "AmortizedFlow, whose family the diagnostic reads")
        fn = fn.base_dist
    reinterpreted = 0
    while isinstance(fn, torch.distributions.Independent):
        reinterpreted += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    if isinstance(fn, torch.distributions.MultivariateNormal):
        loc = fn.loc.detach().reshape(batch, -1, fn.event_shape[0])
        tril = fn.scale_tril.detach().expand(*fn.batch_shape, *fn.scale_tril.shape[-2:])
        tril = tril.reshape(batch, -1, *tril.shape[-2:])
        b, k = loc.shape[1], loc.shape[2]
        rows, cols = torch.tril_indices(k, k, -1, device=loc.device)
        lam = torch.cat([loc.reshape(batch, -1),
                         tril.diagonal(dim1=-2, dim2=-1).log().reshape(batch, -1),
                         tril[:, :, rows, cols].reshape(batch, -1)], 1)
        batch_shape, event = fn.batch_shape, fn.event_shape

        def rebuild(lam):
            n = lam.shape[0]
            new_tril = lower_cholesky(lam[:, b * k:2 * b * k].exp().reshape(n, b, k),
                                      lam[:, 2 * b * k:].reshape(n, b, -1))
            out = dist.MultivariateNormal(lam[:, :b * k].reshape(n, *batch_shape[1:], *event),
                                          scale_tril=new_tril.reshape(
                                              n, *batch_shape[1:], k, k))
            return _wrap(out, reinterpreted, transforms)
        return lam, rebuild
    if isinstance(fn, torch.distributions.Normal):
        shape = torch.broadcast_shapes(fn.loc.shape, fn.scale.shape)
        loc, scale = fn.loc.detach().expand(shape), fn.scale.detach().expand(shape)
        numel = math.prod(shape[1:])
        lam = torch.cat([loc.reshape(batch, -1), scale.log().reshape(batch, -1)], 1)

        def rebuild(lam):
            n = lam.shape[0]
            out = dist.Normal(lam[:, :numel].reshape(n, *shape[1:]),
                              lam[:, numel:].exp().reshape(n, *shape[1:]))
            return _wrap(out, reinterpreted, transforms)
        return lam, rebuild
    raise PairError(
        f"inference_gaps: guide site {name!r} is a {type(fn).__name__}: the best member of its "
        "family per datapoint needs the family's parameters, which are known for Normal and "
        "MultivariateNormal sites (possibly .to_event and transformed by parameter-free "
        "transforms) and for pyro_lvm's guides (pyro_lvm.guides: Normal, full-covariance, "
        "flows)")


def _wrap(fn, reinterpreted: int, transforms):
    if reinterpreted:
        fn = fn.to_event(reinterpreted)
    return dist.TransformedDistribution(fn, transforms) if transforms else fn


def _member(family: _Family, holder: dict, data_plate: str):
    """A guide that samples every site from the family at ``holder["lam"]`` (one function
    per batch, so the pair's contract is checked once)."""
    def member(x):
        fns = family.distributions(holder["lam"])
        with pyro.plate(data_plate, x.shape[0], dim=family.plate_dim):
            for name in family.names:
                pyro.sample(name, fns[name])
    return member


# -- the diagnostic ----------------------------------------------------------------------------
def inference_gaps(model, guide, data, num_particles: int = 100, steps: int = 300,
                   lr: float = 0.05, refine_particles: int = 8, richer=None,
                   batch_size: int = 256, data_plate: str = "data",
                   seed: int | None = 0) -> InferenceGaps:
    """The approximation and amortization gaps of ``guide`` on every row of ``data``.

    For each datapoint: the ELBO of the guide as given; the ELBO of the best member of the
    same family, found by ``steps`` of Adam (``lr``) on the family's parameters lambda of
    that datapoint alone, from the encoder's lambda, with ``refine_particles`` reparameterized
    draws per step and the iterates averaged over the second half (the end replaces the start
    where its ELBO is higher by more than two standard errors of the paired difference, on
    one set of draws; the kept one's ELBO is reported on another);
    log p(x) by importance sampling with that best member as proposal (the richer family's,
    when given and better: a narrow mean-field proposal underestimates log p(x), which
    k-hat flags; ``num_particles``, with its ESS and Pareto k-hat). ``richer``: a second
    (trained) guide of a richer family, refined the same way, to show how much of the
    approximation gap it closes. All ELBOs use ``num_particles`` draws. A refinement whose
    ELBO still rises by more than :data:`RISE_TOLERANCE` into its last quarter is reported
    (``converged``, ``summary()``), never silently used as converged.

    Every nn.Module runs in eval mode; the model's parameters are not changed. Under a
    process group each rank refines every W-th batch (:func:`~pyro_lvm.handlers.map_batches`).

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> g = inference_gaps(ppca.model, ppca.exact_posterior, ppca.sample(5), steps=20)
        >>> bool(g.amortization_gap.abs().max() < 0.01), bool(g.approximation_gap.abs().max()
        ...                                                   < 0.05)
        (True, True)
    """
    num_particles = check_positive_int(num_particles, "num_particles")
    steps = check_positive_int(steps, "steps")
    refine_particles = check_positive_int(refine_particles, "refine_particles")
    lr = check_positive_float(lr, "lr")
    batch_size = check_positive_int(batch_size, "batch_size")
    rows = rows_for(data, model, guide)
    n = len(rows)
    base_seed = 0 if seed is None else seed

    def elbo_draws(member, x, particles, draw_seed):
        with seeded(draw_seed):
            return importance_sample(model, member, (x,), None, particles, data_plate,
                                     tempered=False, call="inference_gaps",
                                     keep_draws=False).log_weights

    def refine(family, x, idx, salt):
        """Adam on lambda at a constant learning rate, with the iterates averaged over the
        second half of the steps (Polyak & Juditsky 1992: the average converges where the
        iterates only jitter, whatever the conditioning); still rising when the average of
        the last quarter beats that of the third by more than the tolerance and the noise.
        The end replaces the start where its ELBO is higher beyond noise on one set of draws,
        and the ELBO of the one kept is reported on another (choosing the larger of two noisy
        numbers would bias it upwards)."""
        holder = {"lam": family.lam}
        member = _member(family, holder, data_plate)
        lam = family.lam.clone().requires_grad_(True)
        optim = torch.optim.Adam([lam], lr=lr)
        half, quarter = steps // 2, steps - max(1, steps // 4)
        third, fourth = torch.zeros_like(family.lam), torch.zeros_like(family.lam)
        counts = [0, 0]
        choose_seed, report_seed = (base_seed + 7919 * salt + k for k in (1, 2))

        def elbo_at(value, draw_seed, mean=True):
            holder["lam"] = value
            with torch.no_grad(), minibatch(idx, n, data_plate):
                lw = elbo_draws(member, x, num_particles, draw_seed)
            return lw.mean(0) if mean else lw

        for step in range(steps):
            holder["lam"] = lam
            with minibatch(idx, n, data_plate):
                lw = elbo_draws(member, x, refine_particles, None)
            (grad,) = torch.autograd.grad(-lw.mean(0).sum(), [lam])
            optim.zero_grad()
            lam.grad = grad
            optim.step()
            if step >= half:
                k = int(step >= quarter)
                counts[k] += 1
                target = fourth if k else third
                target += (lam.detach() - target) / counts[k]
        if counts[0] == 0:  # too few steps to split: the last quarter alone
            third = fourth
        average = (third * counts[0] + fourth * counts[1]) / max(1, sum(counts))
        # the end replaces the start where it is better by more than twice the standard
        # error of the paired difference (same draws): never on noise alone
        diff = (elbo_at(average, choose_seed, mean=False)
                - elbo_at(family.lam, choose_seed, mean=False))
        keep_end = diff.mean(0) > 2 * diff.std(0) / math.sqrt(num_particles)
        # still rising: the last quarter's average beats the third quarter's beyond noise
        gain = (elbo_at(fourth, choose_seed, mean=False)
                - elbo_at(third, choose_seed, mean=False))
        rise = gain.mean(0).clamp_min(0)
        still = (rise > RISE_TOLERANCE) & (rise > 2 * gain.std(0) / math.sqrt(num_particles))
        best_lam = torch.where(keep_end[:, None], average, family.lam)
        return elbo_at(best_lam, report_seed), best_lam, (rise, still), member, holder

    def one_batch(idx):
        x = rows.fetch(idx)
        salt = int(idx[0])
        with minibatch(idx, n, data_plate):
            with torch.no_grad():
                elbo = elbo_draws(guide, x, num_particles, base_seed + 7919 * salt).mean(0)
            family = _family(guide, x, data_plate)
        best, best_lam, (rise, still), member, holder = refine(family, x, idx, salt)
        out = {"elbo": elbo, "elbo_best": best, "rise": rise, "still": still}
        proposal = (member, holder, best_lam)
        if richer is not None:
            with minibatch(idx, n, data_plate):
                rich = _family(richer, x, data_plate)
            rbest, rlam, (rrise, rstill), rmember, rholder = refine(rich, x, idx, salt + 1)
            out.update(elbo_richer=rbest, richer_rise=rrise, richer_still=rstill)
            if float(rbest.mean()) > float(best.mean()):
                proposal = (rmember, rholder, rlam)
        member, holder, lam = proposal
        holder["lam"] = lam
        with torch.no_grad(), minibatch(idx, n, data_plate):
            lw = elbo_draws(member, x, num_particles, base_seed + 7919 * salt + 3).double()
        out["log_px"] = lw.logsumexp(0) - math.log(num_particles)
        out["ess"] = (2 * lw.logsumexp(0) - (2 * lw).logsumexp(0)).exp()
        out["khat"] = torch.tensor([pareto_khat(col, num_particles) for col in lw.T],
                                   dtype=torch.double)
        return {k: v.detach().cpu() if v.dtype == torch.bool else v.detach().double().cpu()
                for k, v in out.items()}

    batches = [torch.arange(s, min(s + batch_size, n), device=rows.device)
               for s in range(0, n, batch_size)]
    with seeded(seed, devices=None), eval_mode():
        parts = map_batches(one_batch, batches, None, sharded=True, seed=seed,
                            desc="inference gaps")
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return InferenceGaps(
        log_px=cat["log_px"], elbo=cat["elbo"], elbo_best=cat["elbo_best"], ess=cat["ess"],
        khat=cat["khat"], rise=cat["rise"],
        converged=~(cat["still"] | cat.get("richer_still", torch.zeros_like(cat["still"]))),
        num_particles=num_particles, steps=steps, elbo_richer=cat.get("elbo_richer"),
        richer_rise=cat.get("richer_rise"))
