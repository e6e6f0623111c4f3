"""Per-datapoint importance weights of a guide for a model, all particles in one pass.

For a model/guide pair following the pyro_lvm contract (local latents in one data plate),
the log importance weight of particle k for datapoint n is

    log w_kn = log p(x_n, z_kn) - log q(z_kn | x_n),   z_kn ~ q(z | x_n)

(Burda et al. 2016, eq. 8). Particles are drawn in one vectorized pass, inside an outermost
plate. A minibatch's subsample scale N/B is *not* part of log w: it is returned apart, to be
applied outside any logsumexp. Any other scale on a site (e.g. a KL weight set with
``poutine.scale``) stays inside log w, where it tempers that site's density, as a training
objective wants; ``tempered=False`` drops those scales, as diagnostics of the model itself
(log p(x), rate, mutual information) want.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape

from .._checks import check_positive_int
from ..handlers import current_minibatch

PARTICLE_PLATE = "_iw_particles"


@dataclass
class ImportanceSample:
    """What one vectorized draw of P particles gives (see the module docstring).

    Attributes:
        log_weights: (P, B) tensor of log w, differentiable.
        data_scale: N / B, the factor that turns a minibatch sum into a full-data estimate.
        outer_log_prob: (P,) log-density of observed sites outside the data plate (they do
            not depend on the local latents; they are added once, outside the logsumexp).
        model_trace, guide_trace: the traces, log-densities computed.
        latent_sites: names of the guide's latent sites.
    """

    log_weights: torch.Tensor
    data_scale: float
    outer_log_prob: torch.Tensor
    model_trace: poutine.Trace
    guide_trace: poutine.Trace
    latent_sites: list[str]
    particles: object  # fn -> fn wrapped in the particle plate
    data_plate: str
    rank: int  # plate dims including the particle plate
    subsample: dict  # subsample indices of the guide's plates, to rerun it on the same rows
    tempered: bool = True  # whether site scales other than the minibatch's are applied

    def site_scale(self, site) -> float | torch.Tensor:
        """The factor on a site's log-density inside log w (1 when untempered)."""
        if not self.tempered:
            return 1.0
        in_plate = _data_frame(site, self.data_plate) is not None
        return site["scale"] / self.data_scale if in_plate else site["scale"]


def plate_nesting(model, guide, args=(), kwargs=None) -> int:
    """How many plate dimensions the model and guide use (as Pyro's ELBO guesses it).

    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0], dim=-2):
    ...         pyro.sample("x", dist.Normal(0., 1.).expand([x.shape[0], 1]), obs=x)
    >>> plate_nesting(model, lambda x: None, (torch.zeros(3, 1),))
    2
    """
    kwargs = kwargs or {}
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    # a trial run must not consume random numbers: the first step would differ from a rerun
    with torch.random.fork_rng(devices=devices), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs)
    dims = [frame.dim for trace in (model_trace, guide_trace)
            for site in trace.nodes.values() if site["type"] == "sample"
            for frame in site["cond_indep_stack"] if frame.vectorized]
    return -min(dims) if dims else 0


def _data_frame(site, data_plate: str):
    for frame in site["cond_indep_stack"]:
        if frame.name == data_plate:
            return frame
    return None


def _per_datapoint(log_prob: torch.Tensor, data_dim: int, rank: int, name: str,
                   shape: tuple[int, int]) -> torch.Tensor:
    """Sum a site's (batch-shaped) log-density over every dim but particles and data."""
    if log_prob.dim() > rank:
        raise ValueError(
            f"site {name!r} has log-density of shape {tuple(log_prob.shape)}: more batch "
            f"dimensions than the model's plates declare ({rank - 1}); wrap them in plates "
            "or move them to the event shape with .to_event()"
        )
    log_prob = log_prob.reshape((1,) * (rank - log_prob.dim()) + tuple(log_prob.shape))
    other = [d for d in range(1, rank) if d != rank + data_dim]
    if other:
        log_prob = log_prob.sum(other)
    return log_prob.expand(shape)


def _reduce_sites(trace, sign: float, sample: ImportanceSample, shape, out, outer,
                  role: str) -> list[str]:
    data_plate, rank = sample.data_plate, sample.rank
    latents = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        frame = _data_frame(site, data_plate)
        is_latent = not site["is_observed"]
        if is_latent:
            latents.append(name)
        if frame is None:
            if is_latent:
                raise ValueError(
                    f"{role} latent site {name!r} is outside pyro.plate({data_plate!r}): "
                    "per-datapoint importance weighting needs every latent inside the data "
                    "plate (global latents couple all datapoints; fit them with Trace_ELBO, "
                    "or make them parameters)"
                )
            lp = scale_and_mask(site["unscaled_log_prob"], sample.site_scale(site),
                                site["mask"])
            lp = lp.reshape((1,) * (rank - lp.dim()) + tuple(lp.shape)) if lp.dim() else lp
            outer += sign * (lp.sum(list(range(1, lp.dim()))) if lp.dim() > 1 else lp)
            continue
        lp = scale_and_mask(site["unscaled_log_prob"], sample.site_scale(site), site["mask"])
        out += sign * _per_datapoint(lp, frame.dim, rank, name, shape)
    return latents


def importance_sample(model, guide, args=(), kwargs=None, num_particles: int = 1,
                      data_plate: str = "data", nesting: int | None = None,
                      tempered: bool = True) -> ImportanceSample:
    """Draw ``num_particles`` particles per datapoint from ``guide`` in one vectorized pass and
    return the (P, B) log importance weights with the traces. ``tempered=False`` leaves out
    the scales a model puts on its sites other than the minibatch's (module docstring).

    Refuses, with an error naming the site: latent sites outside the data plate, model latents
    the guide does not sample, guide sites that cannot be reparameterized, enumerated sites.

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
    if nesting is None:
        nesting = plate_nesting(model, guide, args, kwargs)
    rank = nesting + 1

    def particles(fn):
        return pyro.plate(PARTICLE_PLATE, num_particles, dim=-rank)(fn)

    guide_trace = poutine.trace(particles(guide)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(
        poutine.replay(particles(model), trace=guide_trace)).get_trace(*args, **kwargs)
    _check_traces(model_trace, guide_trace, rank)
    subsample = {name: site["value"] for name, site in guide_trace.nodes.items()
                 if site["type"] == "sample" and site_is_subsample(site)}
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace = prune_subsample_sites(model_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    if pyro.poutine.util.is_validation_enabled():
        for trace in (model_trace, guide_trace):
            for site in trace.nodes.values():
                if site["type"] == "sample":
                    check_site_shape(site, rank)

    frame = next((f for t in (guide_trace, model_trace) for s in t.nodes.values()
                  if s["type"] == "sample" for f in [_data_frame(s, data_plate)] if f), None)
    if frame is None:
        raise ValueError(
            f"the model has no sample site inside pyro.plate({data_plate!r}, ...): "
            "importance weights are per datapoint of that plate"
        )
    handler = current_minibatch(data_plate)
    data_scale = frame.full_size / frame.size * (handler.scale if handler is not None else 1.0)
    shape = (num_particles, frame.size)
    first = next(s for s in model_trace.nodes.values() if s["type"] == "sample")
    log_weights = first["unscaled_log_prob"].new_zeros(shape)
    outer = first["unscaled_log_prob"].new_zeros(num_particles)
    sample = ImportanceSample(log_weights, data_scale, outer, model_trace, guide_trace, [],
                              particles, data_plate, rank, subsample, tempered)
    _reduce_sites(model_trace, 1.0, sample, shape, log_weights, outer, "model")
    sample.latent_sites = _reduce_sites(guide_trace, -1.0, sample, shape, log_weights, outer,
                                        "guide")
    return sample


def _check_traces(model_trace, guide_trace, rank: int) -> None:
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
            continue
        if site["infer"].get("enumerate"):
            raise ValueError(f"guide site {name!r} is enumerated; importance weighting "
                             "needs sampled, reparameterized sites")
        if not getattr(site["fn"], "has_rsample", False):
            raise ValueError(
                f"guide site {name!r} ({type(site['fn']).__name__}) cannot be "
                "reparameterized: the importance-weighted objectives need rsample at every "
                "guide site (a score-function gradient would be needed; marginalize the "
                "site in the model, or use pyro.infer.TraceGraph_ELBO)"
            )
    for name, site in model_trace.nodes.items():
        if (site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
                and name not in guide_trace.nodes):
            raise ValueError(f"the guide does not sample the model's latent site {name!r}")
    if pyro.poutine.util.is_validation_enabled():
        check_model_guide_match(model_trace, guide_trace, rank)


def direct_log_q(sample: ImportanceSample, guide, args=(), kwargs=None) -> torch.Tensor:
    """(P, B) log q(z | x) at the *detached* particles with the guide's parameters live.

    Its gradient is the direct (score) dependence of log q on the guide's parameters, the
    term that sticking-the-landing (Roeder et al. 2017) and DReG (Tucker et al. 2018) remove.
    For a guide with several latent sites the guide is run again, conditioned on the detached
    values, so that q(z2 | z1) is evaluated at a detached z1 as well.
    """
    kwargs = kwargs or {}
    trace = sample.guide_trace
    if len(sample.latent_sites) > 1:
        detached = {name: trace.nodes[name]["value"].detach() for name in sample.latent_sites}
        detached.update(sample.subsample)  # the same rows of subsampled plates
        trace = poutine.trace(sample.particles(poutine.condition(guide, data=detached))
                              ).get_trace(*args, **kwargs)
        trace = prune_subsample_sites(trace)
    out = sample.log_weights.new_zeros(sample.log_weights.shape)
    for name in sample.latent_sites:
        site = trace.nodes[name]
        frame = _data_frame(site, sample.data_plate)
        lp = site["fn"].log_prob(site["value"].detach())
        lp = scale_and_mask(lp, sample.site_scale(site), site["mask"])
        out = out + _per_datapoint(lp, frame.dim, sample.rank, name, tuple(out.shape))
    return out


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
    out = {"prior": {}, "likelihood": {}, "guide": {}}
    shape = tuple(sample.log_weights.shape)
    for role, trace in (("model", sample.model_trace), ("guide", sample.guide_trace)):
        for name, site in trace.nodes.items():
            frame = _data_frame(site, sample.data_plate) if site["type"] == "sample" else None
            if frame is None:
                continue
            lp = scale_and_mask(site["unscaled_log_prob"], sample.site_scale(site),
                                site["mask"])
            lp = _per_datapoint(lp, frame.dim, sample.rank, name, shape)
            key = "guide" if role == "guide" else (
                "likelihood" if site["is_observed"] else "prior")
            out[key][name] = lp
    return out
