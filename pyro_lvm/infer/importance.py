"""Per-datapoint importance weights of a guide for a model.

For a model/guide pair following the pyro_lvm contract (local latents in one data plate),
the log importance weight of particle k for datapoint n is

    log w_kn = log p(x_n, z_kn) - log q(z_kn | x_n),   z_kn ~ q(z | x_n)

(Burda et al. 2016, eq. 8). Particles are drawn in one vectorized pass inside an outermost
plate when the pair allows it, else one at a time (see :mod:`pyro_lvm.infer.particles`, which
decides). Model latents the model enumerates and the guide does not sample are summed out
exactly per datapoint: log p(x_n, z_kn) = logsumexp over their values of the joint. A
minibatch's subsample scale N/B is *not* part of log w: it is returned apart, to be applied
outside any logsumexp. A scale that every site in the plate carries alike (``poutine.scale``
of model and guide, to normalize a loss) multiplies the bound the same way. Any other scale on
a site (e.g. a KL weight set with ``poutine.scale``) stays inside log w, where it tempers that
site's density, as a training objective wants; ``tempered=False`` drops those scales, as
diagnostics of the model itself (log p(x), rate, mutual information) want.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

from .._checks import check_positive_int
from ..contract import (
    ModelError,
    PairError,
    data_frame,
    refuse_discrete,
    refuse_fixed_size,
    run_traced,
    sample_sites,
)
from ..handlers import current_minibatch
from .particles import (
    PARTICLE_PLATE,
    Draw,
    VectorizationWarning,
    check_observed,
    draw,
    may_skip_checks,
    pair_info,
    per_datapoint,
    sequential_draws,
    sum_out_enumerated,
    unchecked,
)

__all__ = ["ImportanceSample", "importance_sample", "require_contract", "direct_log_q",
           "model_log_joint", "site_log_probs", "PARTICLE_PLATE"]


@dataclass
class ImportanceSample:
    """What one draw of P particles per datapoint gives (see the module docstring).

    Attributes:
        log_weights: (P, B) tensor of log w, differentiable.
        data_scale: N / B, the factor that turns a minibatch sum into a full-data estimate.
        outer_log_prob: (P,) log-density of observed sites outside the data plate (they do
            not depend on the local latents; they are added once, outside the logsumexp).
        draws: the passes that made the particles (one vectorized, or one per particle),
            with their traces and log-densities.
        latent_sites: names of the guide's latent sites.
        enumerated: model latents summed out exactly.
    """

    log_weights: torch.Tensor
    data_scale: float
    outer_log_prob: torch.Tensor
    draws: list[Draw]
    latent_sites: list[str]
    data_plate: str
    nesting: int
    enumerated: list[str]
    tempered: bool = True  # whether site scales other than the minibatch's are applied

    @property
    def vectorized(self) -> bool:
        """Whether all particles came from one vectorized pass."""
        return len(self.draws) == 1 and self.draws[0].vectorized

    @property
    def model_trace(self) -> poutine.Trace:
        """The model's trace of the first draw (all particles when vectorized)."""
        return self.draws[0].model_trace

    @property
    def guide_trace(self) -> poutine.Trace:
        """The guide's trace of the first draw (all particles when vectorized)."""
        return self.draws[0].guide_trace

    def site_scale(self, site) -> float | torch.Tensor:
        """The factor on a site's log-density inside log w (1 when untempered)."""
        if not self.tempered:
            return 1.0
        in_plate = data_frame(site, self.data_plate) is not None
        return site["scale"] / self.data_scale if in_plate else site["scale"]

    def values(self, name: str) -> torch.Tensor:
        """The guide's draws at site ``name``, (P, B, D) with each datapoint's value flattened."""
        batch = self.log_weights.shape[1]
        return torch.cat([d.guide_trace.nodes[name]["value"].reshape(d.num_particles, batch, -1)
                          for d in self.draws])


def importance_sample(model, guide, args=(), kwargs=None, num_particles: int = 1,
                      data_plate: str = "data", nesting: int | None = None,
                      tempered: bool = True, vectorize: bool | str = "auto",
                      require_rsample: bool = True, call: str = "importance_sample",
                      keep_draws: bool = True) -> ImportanceSample:
    """Draw ``num_particles`` particles per datapoint from ``guide`` and return the (P, B) log
    importance weights with the traces. ``tempered=False`` leaves out the scales a model puts
    on its sites other than the minibatch's (module docstring). ``vectorize``: True, False or
    "auto" (see :func:`pyro_lvm.infer.particles.pair_info`). ``require_rsample=False`` lets
    guide sites without rsample through (diagnostics need densities, not gradients).

    Refuses, with an error naming ``call`` and the site: latent sites outside the data plate,
    model latents the guide neither samples nor lets the model enumerate, guide sites the model
    does not have, enumerated guide sites, and (with ``require_rsample``) guide sites that
    cannot be reparameterized.

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> x = ppca.sample(3)
        >>> s = importance_sample(ppca.model, ppca.exact_posterior, (x,), num_particles=5)
        >>> s.log_weights.shape
        torch.Size([5, 3])
        >>> bool(torch.allclose(s.log_weights, ppca.log_likelihood(x).expand(5, 3), atol=1e-4))
        True
    """
    kwargs = kwargs or {}
    num_particles = check_positive_int(num_particles, "num_particles")
    # one particle needs no particle dimension: no check, and no plate to broadcast through
    info = require_contract(model, guide, args, kwargs, call, data_plate,
                            vectorize if num_particles > 1 else False, require_rsample)
    sites = info.sites
    nesting = sites.nesting if nesting is None else nesting
    enum = bool(sites.enumerated)
    draws = None
    # Pyro's checks on the pair's first draw; the data's on every draw
    skip = may_skip_checks(info.validated)
    with unchecked(call, observe=False) if skip else contextlib.nullcontext():
        if info.vectorized:
            try:
                draws = [draw(model, guide, args, kwargs, num_particles, nesting, True, enum,
                              call)]
            except ModelError as e:  # e.g. a batch of one row, which the check never saw
                if vectorize is True or "found invalid values" in str(e):
                    raise  # (an invalid distribution argument is one for any layout)
                reason = str(e).split(": ", 1)[-1]
                warnings.warn(f"{call}: the vectorized evaluation failed on this batch "
                              f"({reason}); its particles are evaluated one at a time",
                              VectorizationWarning, stacklevel=2)
        if draws is None:
            draws = sequential_draws(model, guide, args, kwargs, num_particles, nesting, enum,
                                     call)
    if skip:
        check_observed(draws[0], call)
    else:
        info.validated = info.validated or poutine.util.is_validation_enabled()
    # the data plate's frame: the contract guarantees an observation inside it
    frame = next(data_frame(s, data_plate) for _, s in sample_sites(draws[0].model_trace)
                 if data_frame(s, data_plate) is not None)
    handler = current_minibatch(data_plate)
    data_scale = frame.full_size / frame.size * (handler.scale if handler is not None else 1.0)
    sample = ImportanceSample(None, data_scale, None, draws, list(sites.guide_latents),
                              data_plate, nesting, list(sites.enumerated), tempered)
    common = _common_scale(sample) if tempered else None
    if common is not None:  # a scale on every site (loss normalization): outside the bound
        sample.data_scale *= common
    try:
        parts = [_log_weights(d, sample, frame.size) for d in draws]
    except PairError as e:
        raise e if str(e).startswith(call) else PairError(f"{call}: {e}") from e
    sample.log_weights = torch.cat([lw for lw, _ in parts])
    sample.outer_log_prob = torch.cat([outer for _, outer in parts])
    if not keep_draws:
        sample.draws = sample.draws[:1]
    return sample


def _common_scale(sample: ImportanceSample) -> float | None:
    """The scale that every site in the data plate carries beyond the minibatch's, when it is
    one number other than 1 (``poutine.scale`` of model and guide alike, e.g. to normalize a
    loss): it multiplies the bound, not each log-density inside the logsumexp."""
    scales = set()
    for t in (sample.draws[0].model_trace, sample.draws[0].guide_trace):
        for _, site in sample_sites(t):
            if data_frame(site, sample.data_plate) is not None:
                scale = site["scale"] / sample.data_scale
                if isinstance(scale, torch.Tensor):
                    if scale.numel() != 1:
                        return None
                    scale = float(scale)
                scales.add(round(scale, 12))
    if len(scales) == 1 and (scale := scales.pop()) != 1.0:
        return scale
    return None


def require_contract(model, guide, args=(), kwargs=None, call: str = "pyro_lvm",
                     data_plate: str = "data", vectorize: bool | str = "auto",
                     require_rsample: bool = False):
    """The pair's :class:`~pyro_lvm.infer.particles.PairInfo`, after refusing what no
    per-datapoint computation can take (global latents, guide and model latents that do not
    match, and, with ``require_rsample``, guide sites without rsample), naming ``call`` and
    the site. Diagnostics call it before any computation.

    >>> from pyro_lvm.models import PPCA
    >>> ppca = PPCA(3, 1)
    >>> require_contract(ppca.model, ppca.guide, (ppca.sample(4),)).sites.local_latents
    ['z']
    """
    batch = current_minibatch(data_plate)
    if batch is not None:  # a chunk of the rows: not with a guide sized by the plate
        refuse_fixed_size(guide, len(batch.indices), batch.num_data, call, data_plate)
    info = pair_info(model, guide, args, kwargs, data_plate, vectorize, call)
    _refuse(info.sites, call, data_plate, require_rsample)
    return info


def _refuse(sites, call: str, data_plate: str, require_rsample: bool) -> None:
    sites.refuse_global(call, data_plate)
    sites.refuse_extra(call, data_plate)  # before the checks that name a guide site's kind
    if sites.delta_guide_sites:
        raise PairError(
            f"{call}: guide site {sites.delta_guide_sites[0]!r} is a point mass (Delta, as in "
            "MAP or AutoDelta): it has no density over z, so log p(x, z) - log q(z) would be "
            "log p(x, z_hat), not a bound on log p(x). Use a guide with a density; the draws of "
            "a point-mass guide are compared by AggregatePosterior and two-sample tests")
    if not sites.observed:
        raise PairError(
            f"{call}: the model has no observation site inside pyro.plate({data_plate!r}) "
            "(pyro.sample(..., obs=x)): importance weights are per datapoint of that plate")
    if require_rsample:
        refuse_discrete(sites, call)
    missing = sites.missing
    if missing:
        raise PairError(
            f"{call}: the guide does not sample the model's latent site {missing[0]!r}; sample "
            "it in the guide, or, for a discrete site, let the model sum it out exactly with "
            "infer={'enumerate': 'parallel'} at its pyro.sample")


def _log_weights(d: Draw, sample: ImportanceSample, batch: int):
    """(p, B) log w and (p,) outer log-density of one draw."""
    joint, outer = _model_parts(d.model_trace, d, sample)
    log_q = 0.0
    for name, site in sample_sites(d.guide_trace):
        frame = data_frame(site, sample.data_plate)
        lp = scale_and_mask(site["unscaled_log_prob"], sample.site_scale(site), site["mask"])
        log_q = log_q + per_datapoint(lp, frame.dim, d, name)
    lw = (joint - log_q).expand(d.num_particles, batch)
    return lw, lw.new_zeros(d.num_particles) if outer is None else outer.expand(d.num_particles)


def _model_parts(trace, d: Draw, sample: ImportanceSample):
    """Per-datapoint log p(x_n, z_n) of the model's sites in the data plate, enumerated sites
    summed out, and the (p,) log-density of observed sites outside the plate."""
    joint, outer = 0.0, None
    enum_dims = len(sample.enumerated)
    if enum_dims > 1:
        _refuse_shared_enumeration(trace, sample)
    for name, site in sample_sites(trace):
        frame = data_frame(site, sample.data_plate)
        lp = scale_and_mask(site["unscaled_log_prob"], sample.site_scale(site), site["mask"])
        if frame is None:  # an observation outside the plate (global latents were refused)
            if lp.dim() > d.rank:
                raise PairError(f"observed site {name!r} outside pyro.plate("
                                f"{sample.data_plate!r}) depends on an enumerated site; "
                                "pyro_lvm sums enumerated sites out per datapoint only")
            lp = lp.reshape((1,) * (d.rank - lp.dim()) + tuple(lp.shape)) if lp.dim() else lp
            total = lp.sum(list(range(1, lp.dim()))) if lp.dim() > 1 else lp
            total = total if d.vectorized else total.sum().reshape(1)
            outer = total if outer is None else outer + total
            continue
        if name in sample.enumerated and any(
                f.vectorized and f.name not in (sample.data_plate, PARTICLE_PLATE)
                for f in site["cond_indep_stack"]):
            raise PairError(
                f"enumerated site {name!r} is inside a plate other than pyro.plate("
                f"{sample.data_plate!r}): pyro_lvm sums enumerated sites out per datapoint "
                "only; use pyro.infer.TraceEnum_ELBO for this model, or move the site")
        joint = joint + per_datapoint(lp, frame.dim, d, name, enum_dims)
    return sum_out_enumerated(joint), outer


def _refuse_shared_enumeration(trace, sample: ImportanceSample) -> None:
    """pyro.markov lets enumerated sites share a dimension (z_0 and z_2 of a chain): summing the
    joint over the dimensions would treat them as one variable. Refuse, naming both."""
    seen = {}
    for name in sample.enumerated:
        dim = trace.nodes[name]["infer"].get("_enumerate_dim") if name in trace.nodes else None
        if dim is not None and dim in seen:
            raise PairError(
                f"enumerated sites {seen[dim]!r} and {name!r} share one enumeration dimension "
                "(pyro.markov reuses dimensions along a chain): pyro_lvm sums enumerated sites "
                "out by brute force over their joint values and cannot contract a chain. Use "
                "pyro.infer.TraceEnum_ELBO for this model, or iterate with a plain range() so "
                "that each site has its own dimension (feasible for short chains)")
        seen[dim] = name


def _rerun(program, d: Draw, sample: ImportanceSample, args, kwargs, enumerate_model=False):
    """Run ``program`` on the draw's particles again, its latent sites conditioned on the
    *detached* draws and its plates on the same rows."""
    data = {name: d.guide_trace.nodes[name]["value"].detach() for name in sample.latent_sites}
    data.update(d.subsample)
    fn = d.wrap(poutine.condition(program, data=data))
    if enumerate_model:
        fn = poutine.enum(fn, first_available_dim=-(d.rank + 1))
    trace = prune_subsample_sites(run_traced(fn, args, kwargs, "gradient estimator"))
    trace.compute_log_prob()
    return trace


def direct_log_q(sample: ImportanceSample, guide, args=(), kwargs=None) -> torch.Tensor:
    """(P, B) log q(z | x) at the *detached* particles with the guide's parameters live.

    Its gradient is the direct (score) dependence of log q on the guide's parameters, the
    term that sticking-the-landing (Roeder et al. 2017) and DReG (Tucker et al. 2018) remove.
    For a guide with several latent sites the guide is run again, conditioned on the detached
    values, so that q(z2 | z1) is evaluated at a detached z1 as well.
    """
    out = []
    for d in sample.draws:
        trace = d.guide_trace
        if len(sample.latent_sites) > 1:
            trace = _rerun(guide, d, sample, args, kwargs)
        total = sample.log_weights.new_zeros(())
        for name in sample.latent_sites:
            site = trace.nodes[name]
            try:
                lp = site["fn"].log_prob(site["value"].detach())
            except (KeyError, NotImplementedError) as e:
                raise PairError(
                    f"the STL/DReG estimators evaluate log q at the detached draw of guide site "
                    f"{name!r}, which needs its transforms to be invertible; "
                    f"{type(site['fn']).__name__} raised {type(e).__name__} ({e}): use "
                    "estimator='reparam', or an invertible flow") from e
            lp = scale_and_mask(lp, sample.site_scale(site), site["mask"])
            total = total + per_datapoint(lp, data_frame(site, sample.data_plate).dim, d, name)
        out.append(total.expand(d.num_particles, sample.log_weights.shape[1]))
    return torch.cat(out)


def model_log_joint(sample: ImportanceSample, model, args=(), kwargs=None) -> torch.Tensor:
    """(P, B) log p(x_n, z) at the *detached* particles with the model's parameters live: the
    model's direct dependence on its parameters, without the path through the guide's draws.

    >>> from pyro_lvm.models import PPCA
    >>> ppca = PPCA(4, 2)
    >>> x = ppca.sample(3)
    >>> s = importance_sample(ppca.model, ppca.guide, (x,), num_particles=2)
    >>> log_q = direct_log_q(s, ppca.guide, (x,))
    >>> bool(torch.allclose(model_log_joint(s, ppca.model, (x,)) - log_q, s.log_weights))
    True
    """
    out = []
    for d in sample.draws:
        trace = _rerun(model, d, sample, args, kwargs, bool(sample.enumerated))
        joint, _ = _model_parts(trace, d, sample)
        out.append(joint.expand(d.num_particles, sample.log_weights.shape[1]))
    return torch.cat(out)


def site_log_probs(sample: ImportanceSample) -> dict[str, dict[str, torch.Tensor]]:
    """Per-datapoint log-densities of every site inside the data plate, shape (P, B) each,
    split into the model's latents ("prior"), its observations ("likelihood") and the
    guide's latents ("guide"). Their sums make ``sample.log_weights``.

    >>> from pyro_lvm.models import PPCA
    >>> ppca = PPCA(4, 2)
    >>> s = importance_sample(ppca.model, ppca.guide, (ppca.sample(3),), num_particles=2)
    >>> parts = site_log_probs(s)
    >>> sorted(parts), sorted(parts["prior"]), parts["likelihood"]["x"].shape
    (['guide', 'likelihood', 'prior'], ['z'], torch.Size([2, 3]))
    """
    if sample.enumerated:
        raise PairError(
            f"the model enumerates {sample.enumerated[0]!r}: its prior and likelihood do not "
            "split per site once the site is summed out; sample it in the guide instead "
            "(e.g. a Categorical guide) to get rate, distortion and mutual information")
    out = {"prior": {}, "likelihood": {}, "guide": {}}
    batch = sample.log_weights.shape[1]
    for d in sample.draws:
        for role, trace in (("model", d.model_trace), ("guide", d.guide_trace)):
            for name, site in sample_sites(trace):
                frame = data_frame(site, sample.data_plate)
                if frame is None:
                    continue
                lp = scale_and_mask(site["unscaled_log_prob"], sample.site_scale(site),
                                    site["mask"])
                lp = per_datapoint(lp, frame.dim, d, name).expand(d.num_particles, batch)
                key = "guide" if role == "guide" else (
                    "likelihood" if site["is_observed"] else "prior")
                out[key].setdefault(name, []).append(lp)
    return {key: {name: torch.cat(parts) for name, parts in group.items()}
            for key, group in out.items()}
