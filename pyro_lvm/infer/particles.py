"""Particles: draw P particles per datapoint from a guide and replay the model on them, either
all at once inside an outermost plate (vectorized) or one at a time (sequential), and decide,
once per model/guide pair and data shape, which of the two is safe.

Prepending a particle dimension is not safe for every model. ``BatchNorm1d`` rejects a
(P, B, H) input; ``softmax(dim=1)``, right for a (batch, vocab) tensor, silently normalizes
over the batch once a leading dimension exists; indexing by sampled tensors can mis-broadcast.
The same draws evaluated one particle at a time are always right. So before the first
vectorized evaluation of a pair, :func:`pair_info` draws a few particles one at a time,
evaluates the same values vectorized, and compares every site's per-datapoint log-density.
If they disagree, or the vectorized run raises, the pair is evaluated sequentially (with one
warning naming the first site that disagreed), or, with ``vectorize=True``, refused. The
check runs with every ``nn.Module`` it reaches in eval mode (no dropout noise, no BatchNorm
statistics updated) and consumes no random numbers; its verdict is cached per pair and per
row shape of the data.

Model sites marked ``infer={"enumerate": "parallel"}`` that the guide does not sample are
enumerated (``poutine.enum``), each in its own dimension left of the plates, to be summed out
exactly per datapoint by the caller.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape
from torch.distributions import Independent

from ..contract import (
    ModelError,
    PairCache,
    PairError,
    PairSites,
    data_frame,
    pair_sites,
    row_shapes,
    run_traced,
    sample_sites,
    trial,
)

PARTICLE_PLATE = "_iw_particles"
VECTORIZE = (True, False, "auto")
NUM_CHECK = 2  # particles compared by the vectorization check


class VectorizationWarning(UserWarning):
    """A model/guide pair does not broadcast over a leading particle dimension: pyro_lvm
    evaluates its particles one at a time (correct, slower)."""


@dataclass
class Draw:
    """One pass of the guide and of the model replayed on it: ``num_particles`` particles in
    an outermost plate (``vectorized``), or one particle without any particle dimension."""

    model_trace: poutine.Trace
    guide_trace: poutine.Trace
    num_particles: int
    nesting: int
    vectorized: bool
    subsample: dict          # subsample indices of the guide's plates, to rerun on the same rows

    @property
    def rank(self) -> int:
        """Plate dimensions of this draw's sites, the particle plate included."""
        return self.nesting + int(self.vectorized)

    def wrap(self, fn):
        """``fn`` inside this draw's particle plate (unchanged for a sequential draw)."""
        return wrap_particles(fn, self.num_particles, self.nesting, self.vectorized)


def wrap_particles(fn, num_particles: int, nesting: int, vectorized: bool):
    """``fn`` inside an outermost particle plate of ``num_particles`` when ``vectorized``.

    >>> import pyro.distributions as dist
    >>> def guide():
    ...     with pyro.plate("data", 3):
    ...         return pyro.sample("z", dist.Normal(0., 1.))
    >>> wrap_particles(guide, 5, nesting=1, vectorized=True)().shape
    torch.Size([5, 3])
    """
    if not vectorized:
        return fn
    return pyro.plate(PARTICLE_PLATE, num_particles, dim=-(nesting + 1))(fn)


def draw(model, guide, args=(), kwargs=None, num_particles: int = 1, nesting: int = 1,
         vectorized: bool = True, enumerate_model: bool = False, call: str = "pyro_lvm",
         conditioned: dict | None = None, rows: dict | None = None) -> Draw:
    """Trace the guide (conditioned on ``conditioned`` values, if given) and the model on its
    draws, compute every site's log-density and return a :class:`Draw`. ``rows``: subsample
    indices of plates that subsample themselves, to draw on the same rows as another draw.
    Errors from inside the user's code come back with the call, program, site and shape.

    >>> from pyro_lvm.models import PPCA
    >>> ppca = PPCA(4, 2)
    >>> d = draw(ppca.model, ppca.guide, (ppca.sample(3),), num_particles=5)
    >>> d.guide_trace.nodes["z"]["value"].shape, d.rank
    (torch.Size([5, 3, 2]), 2)
    """
    how = (f" while evaluating {num_particles} particles vectorized (inside a particle plate at "
           f"dim {-(nesting + 1)})" if vectorized else " while evaluating one particle")
    def wrap(fn):
        return wrap_particles(fn, num_particles, nesting, vectorized)

    if rows:
        guide, model = poutine.condition(guide, data=rows), poutine.condition(model, data=rows)
    guide_fn = guide if conditioned is None else poutine.condition(guide, data=conditioned)
    guide_trace = run_traced(wrap(guide_fn), args, kwargs, call, "guide", how)
    if conditioned is None:
        model_fn = poutine.replay(wrap(model), trace=guide_trace)
    else:
        model_fn = wrap(poutine.condition(model, data=conditioned))
    if enumerate_model:
        model_fn = poutine.enum(model_fn, first_available_dim=-(nesting + int(vectorized) + 1))
    model_trace = run_traced(model_fn, args, kwargs, call, "model", how)
    subsample = {name: site["value"] for name, site in guide_trace.nodes.items()
                 if site["type"] == "sample" and site_is_subsample(site)}
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace = prune_subsample_sites(model_trace)
    rank = nesting + int(vectorized)
    for role, trace in (("model", model_trace), ("guide", guide_trace)):
        try:
            trace.compute_log_prob()
        except Exception as e:
            raise ModelError(f"{call}: computing the {role}'s log-densities{how} raised "
                             f"{type(e).__name__}: {e}") from e
    if pyro.poutine.util.is_validation_enabled() and conditioned is None:
        for trace in (model_trace, guide_trace):
            for _, site in sample_sites(trace):
                if site["infer"].get("_enumerate_dim") is None:
                    check_site_shape(site, rank)
        check_model_guide_match(model_trace, guide_trace, rank)
    return Draw(model_trace, guide_trace, num_particles, nesting, vectorized, subsample)


def sequential_draws(model, guide, args=(), kwargs=None, num_particles: int = 1,
                     nesting: int = 1, enumerate_model: bool = False,
                     call: str = "pyro_lvm") -> list[Draw]:
    """``num_particles`` one-particle draws on the same rows (a plate that subsamples itself
    is held to the first draw's rows).

    >>> from pyro_lvm.models import PPCA
    >>> ppca = PPCA(4, 2)
    >>> [d.guide_trace.nodes["z"]["value"].shape for d in
    ...  sequential_draws(ppca.model, ppca.guide, (ppca.sample(3),), num_particles=2)]
    [torch.Size([3, 2]), torch.Size([3, 2])]
    """
    first = draw(model, guide, args, kwargs, 1, nesting, False, enumerate_model, call)
    return [first] + [draw(model, guide, args, kwargs, 1, nesting, False, enumerate_model, call,
                           rows=first.subsample) for _ in range(num_particles - 1)]


def sum_out_enumerated(log_prob: torch.Tensor) -> torch.Tensor:
    """(E..., p, B) -> (p, B): logsumexp over the enumerated dimensions left of the particles.

    >>> sum_out_enumerated(torch.zeros(2, 3, 1, 4)).shape
    torch.Size([1, 4])
    """
    if not isinstance(log_prob, torch.Tensor) or log_prob.dim() <= 2:
        return log_prob
    return log_prob.logsumexp(tuple(range(log_prob.dim() - 2)))


def per_datapoint(log_prob: torch.Tensor, frame_dim: int, draw: Draw, name: str,
                  enum_dims: int = 0) -> torch.Tensor:
    """A site's (batch-shaped) log-density summed over every plate but particles and data:
    shape (E..., p, B), with p = the draw's particles (1 for a sequential draw) and E... the
    enumerated dimensions the site depends on (none for most sites).

    >>> from pyro_lvm.models import PPCA
    >>> ppca = PPCA(4, 2)
    >>> d = draw(ppca.model, ppca.guide, (ppca.sample(3),), num_particles=5)
    >>> per_datapoint(d.model_trace.nodes["x"]["log_prob"], -1, d, "x").shape
    torch.Size([5, 3])
    """
    rank = draw.rank
    if log_prob.dim() > rank + enum_dims:
        raise PairError(
            f"site {name!r} has log-density of shape {tuple(log_prob.shape)}: more batch "
            f"dimensions than the model's plates declare ({draw.nesting}); wrap them in plates "
            "or move them to the event shape with .to_event()")
    if log_prob.dim() < rank:
        log_prob = log_prob.reshape((1,) * (rank - log_prob.dim()) + tuple(log_prob.shape))
    if not draw.vectorized:  # give it the particle dimension the vectorized layout has
        log_prob = log_prob.unsqueeze(log_prob.dim() - rank)
    nesting = draw.nesting
    other = [d for d in range(-nesting, 0) if d != frame_dim]
    if other:
        log_prob = log_prob.sum(other, keepdim=True)
    return log_prob.flatten(-nesting) if nesting > 1 else log_prob


# -- which path is safe ------------------------------------------------------------------------

@dataclass
class PairInfo:
    """What pyro_lvm knows about a pair on data of one row shape: its sites, whether its
    particles may be vectorized (``reason``: why not), and whether a draw has passed Pyro's
    validation (``validated``: later draws may skip it, :func:`may_skip_checks`)."""

    sites: PairSites
    vectorized: bool
    reason: str = ""
    validated: bool = False


_ALWAYS_VALIDATE = [os.environ.get("PYRO_LVM_VALIDATE", "").lower() == "always"]


@contextlib.contextmanager
def always_validate():
    """Run Pyro's validation on every draw inside this block, not only on a pair's first
    (also: the environment variable ``PYRO_LVM_VALIDATE=always``). For debugging a run whose
    loss went non-finite: the distribution argument that went invalid is then named.

    >>> with always_validate():
    ...     _ALWAYS_VALIDATE[0]
    True
    """
    before = _ALWAYS_VALIDATE[0]
    _ALWAYS_VALIDATE[0] = True
    try:
        yield
    finally:
        _ALWAYS_VALIDATE[0] = before


def may_skip_checks(validated: bool) -> bool:
    """Whether a draw or step may skip Pyro's validation: the pair's first (``validated``)
    has run it, validation is on (else there is nothing to skip) and :func:`always_validate`
    is off. The checks that only need to run once per pair and row shape are then skipped:
    site shapes, the model/guide match, and every distribution's arguments, which scan
    (particles x rows x features) tensors; the observed values, which change from batch to
    batch, are still checked (:func:`check_observed_value`).

    >>> may_skip_checks(True), may_skip_checks(False)
    (True, False)
    >>> with always_validate():
    ...     may_skip_checks(True)
    False
    """
    return validated and not _ALWAYS_VALIDATE[0] and poutine.util.is_validation_enabled()


@contextlib.contextmanager
def unchecked(call: str, observe: bool = True):
    """Pyro's validation off and, with ``observe``, the observed values checked as the
    program runs (:class:`ObservedChecks`; a caller holding the traces checks them after the
    draw instead, :func:`check_observed`, which spares the handler's cost on every message).
    See :func:`may_skip_checks` for when.

    >>> with unchecked("demo"):
    ...     poutine.util.is_validation_enabled()
    False
    """
    with pyro.validation_enabled(False), \
            ObservedChecks(call) if observe else contextlib.nullcontext():
        yield


def check_observed(d: Draw, call: str) -> None:
    """Every observed value of a draw within its site's support (:func:`check_observed_value`).

    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", 2):
    ...         pyro.sample("x", dist.Bernoulli(0.5), obs=x)
    >>> tr = poutine.trace(model).get_trace(torch.tensor([0.0, 0.5]))
    >>> check_observed(Draw(tr, tr, 1, 1, False, {}), "demo")
    Traceback (most recent call last):
    ...
    ValueError: demo: observed site 'x' has value 0.5 at index [1], outside the support of ...
    """
    for name, site in sample_sites(d.model_trace):
        if site["is_observed"] and site["mask"] is None:
            check_observed_value(name, site["fn"], site["value"], call)


def check_observed_value(name: str, fn, value: torch.Tensor, call: str) -> None:
    """``value`` within the support of ``fn``'s elementwise law, else a ValueError naming the
    site, the value and where it is: what validation checks that changes from batch to batch
    (a few elementwise comparisons on the data, not on the particles).

    >>> import pyro.distributions as dist
    >>> check_observed_value("x", dist.Bernoulli(0.5).expand([2]), torch.tensor([0.0, 0.5]),
    ...                      "demo")
    Traceback (most recent call last):
    ...
    ValueError: demo: observed site 'x' has value 0.5 at index [1], outside the support of ...
    """
    base = fn
    while isinstance(base, Independent | dist.ExpandedDistribution):  # the elementwise law
        base = base.base_dist
    support = getattr(base, "support", None)  # (a plate's subsample site has none)
    if isinstance(base, dist.MaskedDistribution) or support is None:
        return  # masked-out values may be anything (missing data)
    if support is dist.constraints.boolean and value.is_floating_point() \
            and bool((value * (value - 1)).abs().amax() == 0):
        return  # every value 0 or 1 (NaN and inf fail this), in a third of the general time
    try:
        inside = support.check(value)
    except (NotImplementedError, RuntimeError, TypeError, AttributeError):
        return
    if isinstance(inside, torch.Tensor) and not bool(inside.all()):
        where = tuple(int(i) for i in (~inside).nonzero()[0])
        bad = value.expand(inside.shape)[where]
        raise ValueError(
            f"{call}: observed site {name!r} has value {float(bad):.6g} at index "
            f"{list(where)}, outside the support of {type(base).__name__} ({support})")


class ObservedChecks(Messenger):
    """Check every observed value against its site's support as the program runs
    (:func:`check_observed_value`), for draws that skip Pyro's validation.

    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     pyro.sample("x", dist.Bernoulli(0.5).expand([2]).to_event(1), obs=x)
    >>> with ObservedChecks("demo"):
    ...     model(torch.tensor([1.0, 2.0]))
    Traceback (most recent call last):
    ...
    ValueError: demo: observed site 'x' has value 2 at index [1], outside the support of ...
    """

    def __init__(self, call: str):
        super().__init__()
        self.call = call

    def _postprocess_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["is_observed"] and msg["mask"] is None \
                and not site_is_subsample(msg):
            check_observed_value(msg["name"], msg["fn"], msg["value"], self.call)


_CACHE = PairCache()


def pair_info(model, guide, args=(), kwargs=None, data_plate: str = "data",
              vectorize: bool | str = "auto", call: str = "pyro_lvm") -> PairInfo:
    """The pair's sites and vectorization verdict, computed once per pair, data plate, row
    shape and ``vectorize`` setting (cached).

    ``vectorize``: True (vectorize; a disagreement is an error), False (one particle at a
    time, no check), "auto" (check, and fall back with a :class:`VectorizationWarning`).

    >>> from pyro_lvm.models import PPCA
    >>> ppca = PPCA(4, 2)
    >>> info = pair_info(ppca.model, ppca.guide, (ppca.sample(5),))
    >>> info.vectorized, info.sites.local_latents
    (True, ['z'])
    """
    if vectorize not in VECTORIZE:
        raise ValueError(f"vectorize must be True, False or 'auto', got {vectorize!r}")
    key = (data_plate, row_shapes(args, kwargs), vectorize)
    info = _CACHE.get(model, guide, key)
    if info is not None:
        return info
    sites = pair_sites(model, guide, args, kwargs, data_plate, call)
    if sites.outer_observed and sites.checkable:
        _refuse_outer_dependence(model, guide, args, kwargs, sites, data_plate, call)
    info = PairInfo(sites, vectorized=vectorize is not False)
    if vectorize is not False and sites.checkable:
        reason = check_vectorization(model, guide, args, kwargs, sites, data_plate, call)
        if reason is not None:
            message = (f"{call}: the model/guide pair does not broadcast over a leading "
                       f"particle dimension: {reason}. ")
            if vectorize is True:
                raise PairError(message + "Pass vectorize='auto' or False to evaluate one "
                                "particle at a time, or make the model vectorizable: "
                                + REMEDY)
            warnings.warn(message + "pyro_lvm evaluates its particles one at a time instead "
                          "(correct, but slower). To vectorize: " + REMEDY,
                          VectorizationWarning, stacklevel=3)
            info = PairInfo(sites, vectorized=False, reason=reason)
    _CACHE.put(model, guide, key, info)
    return info


REMEDY = ("index and normalize from the right (softmax(dim=-1), x[..., i]) and let every tensor "
          "op broadcast over extra leading dimensions; keep a model with BatchNorm1d on one "
          "particle at a time (vectorize=False): its batch statistics depend on which rows "
          "share a batch")


def _refuse_outer_dependence(model, guide, args, kwargs, sites, data_plate, call) -> None:
    """An observed (or factor) site outside the data plate whose log-density changes with the
    local latents would make the weights not per datapoint: refuse it, naming the site."""
    with trial():
        draws = sequential_draws(model, guide, args, kwargs, 3, sites.nesting,
                                 bool(sites.enumerated), call)
    for name in sites.outer_observed:
        values = [float(d.model_trace.nodes[name]["log_prob"].sum()) for d in draws]
        if max(values) - min(values) > 1e-6 * (1 + abs(values[0])):
            raise PairError(
                f"{call}: site {name!r} is outside pyro.plate({data_plate!r}) but its "
                f"log-density changes with the local latents ({values[0]:.6g} and "
                f"{values[1]:.6g} at two draws): per-datapoint importance weights need every "
                "site that reads a local latent inside the data plate. Move it into the plate "
                "(one term per datapoint)")


def _stack_particles(values: list[torch.Tensor], event_dim: int, nesting: int) -> torch.Tensor:
    """Stack one-particle values into the vectorized layout (particle dim left of the plates)."""
    out = []
    for v in values:
        batch = v.dim() - event_dim
        out.append(v.reshape((1,) * max(0, nesting - batch) + tuple(v.shape)))
    return torch.stack(out)


def check_vectorization(model, guide, args, kwargs, sites: PairSites, data_plate: str,
                        call: str, num_check: int = NUM_CHECK) -> str | None:
    """None when the vectorized evaluation of ``num_check`` particles gives the same
    per-datapoint log-density at every site as the same particles evaluated one at a time;
    otherwise a sentence saying which site disagreed and by how much, or what the vectorized
    run raised.

    >>> import pyro.distributions as dist
    >>> def model(x):  # softmax over dim=1: right for (batch, 3), wrong with particles
    ...     with pyro.plate("data", x.shape[0]):
    ...         z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.).to_event(1))
    ...         pyro.sample("x", dist.Normal(torch.softmax(z, dim=1), 1.).to_event(1), obs=x)
    >>> def guide(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("z", dist.Normal(torch.zeros(3), 1.).to_event(1))
    >>> x = torch.zeros(4, 3)
    >>> sites = pair_sites(model, guide, (x,))
    >>> check_vectorization(model, guide, (x,), None, sites, "data", "demo")[:32]
    "the model's site 'x' has log-den"
    """
    nesting, enum = sites.nesting, bool(sites.enumerated)
    with trial():
        seq = sequential_draws(model, guide, args, kwargs, num_check, nesting, enum, call)
        values = {name: _stack_particles([d.guide_trace.nodes[name]["value"] for d in seq],
                                         seq[0].guide_trace.nodes[name]["fn"].event_dim,
                                         nesting)
                  for name in sites.guide_latents}
        try:
            vec = _vectorized_at(values, model, guide, args, kwargs, num_check, nesting, enum,
                                 call, seq[0].subsample)
        except ModelError as e:
            return "the vectorized run failed: " + str(e).split(": ", 1)[1]
    return _compare(seq, vec, data_plate)


def _vectorized_at(values, model, guide, args, kwargs, num, nesting, enum, call, rows) -> Draw:
    """A vectorized draw with the guide's sites conditioned on ``values``. A guide transform
    that cannot be inverted at given values (a planar flow) knows its log q only at its own
    draws: then the model alone is evaluated at the values."""
    try:
        return draw(model, guide, args, kwargs, num, nesting, True, enum, call,
                    conditioned=values, rows=rows)
    except ModelError as e:
        if not isinstance(e.__cause__, KeyError | NotImplementedError):
            raise
    return draw(model, _no_guide, args, kwargs, num, nesting, True, enum, call,
                conditioned=values, rows=rows)


def _no_guide(*args, **kwargs):
    return None


def _compare(seq: list[Draw], vec: Draw, data_plate: str) -> str | None:
    totals_seq, totals_vec = 0.0, 0.0
    for role in ("model_trace", "guide_trace"):
        for name, site in sample_sites(getattr(vec, role)):
            frame = data_frame(site, data_plate)
            if frame is None:
                continue
            enum_dims = _enum_dims(site, vec.rank)
            one = [per_datapoint(getattr(d, role).nodes[name]["log_prob"], frame.dim, d, name,
                                 enum_dims) for d in seq]
            got = per_datapoint(site["log_prob"], frame.dim, vec, name, enum_dims)
            want = torch.cat(one, -2)
            sign = 1.0 if role == "model_trace" else -1.0
            totals_seq, totals_vec = totals_seq + sign * want, totals_vec + sign * got
            if enum_dims or got.shape != want.shape:
                continue
            bad = _disagreement(got, want)
            if bad is not None:
                program = "model" if role == "model_trace" else "guide"
                return f"the {program}'s site {name!r} {bad}"
    totals_seq, totals_vec = sum_out_enumerated(totals_seq), sum_out_enumerated(totals_vec)
    if isinstance(totals_vec, torch.Tensor):
        bad = _disagreement(totals_vec, totals_seq.expand_as(totals_vec))
        if bad is not None:
            return f"the per-datapoint log weight {bad}"
    return None


def _enum_dims(site, rank: int) -> int:
    lp = site.get("log_prob")
    return max(0, lp.dim() - rank) if isinstance(lp, torch.Tensor) else 0


def _disagreement(got: torch.Tensor, want: torch.Tensor) -> str | None:
    got, want = got.double(), want.double()
    close = torch.isclose(got, want, rtol=1e-4, atol=1e-3, equal_nan=True) | (got == want)
    if bool(close.all()):
        return None
    diff = (got - want).abs().nan_to_num(float("inf"))
    p, n = divmod(int(diff.argmax()), got.shape[-1])
    return (f"has log-density {float(got[p, n]):.6g} vectorized but {float(want[p, n]):.6g} "
            f"evaluated one particle at a time (particle {p}, datapoint {n}; "
            f"{int((~close).sum())} of {close.numel()} values differ)")
