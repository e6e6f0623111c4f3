"""The model/guide contract in one place.

pyro_lvm works on any pair ``model(x)``, ``guide(x)`` whose local latents live inside one data
plate (default name ``"data"``). This module is the single home of the rules that every
objective and diagnostic applies to such a pair:

- which sample sites are local latents, observations or global latents, and which plate is the
  data plate and at which dim (:func:`pair_sites`);
- how many plate dimensions the pair uses (:func:`plate_nesting`);
- which parameters are the guide's and which the model's, decided by *use*: what the guide's
  distributions depend on and what the model's log-densities depend on, read off the autograd
  graph (:func:`param_roles`), not by which program registered them;
- how the guide's sites depend on each other (:func:`guide_dependencies`, from Pyro's
  ``pyro.infer.inspect.get_dependencies``);
- how an error raised inside the user's code is reported: with the pyro_lvm call, the program
  (model or guide), the last site it reached and that site's shape in front (:func:`run_traced`).
"""

from __future__ import annotations

import re
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from .rows import TensorRows, as_rows


class PairError(ValueError):
    """An error about a model/guide pair, raised by pyro_lvm with the call and site named."""


class ModelError(PairError):
    """The user's model or guide raised while pyro_lvm ran it; the message says which call,
    which program, which site it had reached and that site's shape."""


def data_frame(site, data_plate: str):
    """The data plate's frame in a site's plate stack, or None (a site outside the plate).

    >>> import pyro
    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", 3):
    ...         pyro.sample("z", dist.Normal(0., 1.))
    >>> site = poutine.trace(model).get_trace(None).nodes["z"]
    >>> data_frame(site, "data").dim
    -1
    """
    for frame in site["cond_indep_stack"]:
        if frame.name == data_plate:
            return frame
    return None


def sample_sites(trace):
    """(name, site) of a trace's sample sites; subsample sites and ``pyro.deterministic``
    sites (records of a value, with no density) left out.

    >>> import pyro
    >>> import pyro.distributions as dist
    >>> def model():
    ...     with pyro.plate("data", 2):
    ...         z = pyro.sample("z", dist.Normal(0., 1.))
    ...         pyro.deterministic("twice", 2 * z)
    >>> [name for name, _ in sample_sites(poutine.trace(model).get_trace())]
    ['z']
    """
    return [(name, site) for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)
            and not site["infer"].get("_deterministic")]


def _shape_of(site) -> str:
    value = site.get("value")
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else "?"


@contextmanager
def eval_mode():
    """Every nn.Module called inside runs in eval mode (restored afterwards): trial runs and
    checks must neither draw dropout noise nor move BatchNorm's running statistics.

    >>> from torch import nn
    >>> bn = nn.BatchNorm1d(2)
    >>> with eval_mode():
    ...     _ = bn(torch.randn(4, 2))
    >>> int(bn.num_batches_tracked), bn.training
    (0, True)
    """
    changed = []

    def hook(module, _):
        if module.training:
            module.training = False
            changed.append(module)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
        for module in changed:
            module.training = True


@contextmanager
def trial():
    """A run that leaves no trace of itself: no random numbers consumed (on every device), no
    gradients, nothing passed to outer handlers, every nn.Module in eval mode. Trial runs and
    checks of a pair go through it, so that the run that follows is the one it would have been.

    >>> state = torch.random.get_rng_state()
    >>> with trial():
    ...     _ = torch.randn(3)
    >>> torch.equal(torch.random.get_rng_state(), state)
    True
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), poutine.block(), torch.no_grad(), eval_mode():
        yield


def run_traced(fn, args=(), kwargs=None, call: str = "pyro_lvm", role: str = "model",
               detail: str = "") -> poutine.Trace:
    """``poutine.trace(fn).get_trace(*args, **kwargs)``; an exception from inside the user's
    code is re-raised as :class:`ModelError` naming ``call``, ``role``, the last sample site
    the program reached and its value's shape (the original exception is chained).

    >>> import pyro
    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         z = pyro.sample("z", dist.Normal(0., 1.))
    ...         pyro.sample("x", dist.Normal(z @ torch.ones(7), 1.), obs=x)
    >>> try:
    ...     run_traced(model, (torch.zeros(3),), call="log_likelihood")
    ... except ModelError as e:
    ...     print(str(e).splitlines()[0][:73])
    log_likelihood: the model raised RuntimeError after site 'z' (value shape
    """
    handler = poutine.trace(fn)
    try:
        return handler.get_trace(*args, **(kwargs or {}))
    except PairError as e:  # pyro_lvm's own, raised inside: without Pyro's shape table
        raise type(e)(_without_shapes(e)) from e.__cause__
    except Exception as e:  # the user's code: put pyro_lvm's own sentence in front
        sites = [(n, s) for n, s in handler.msngr.trace.nodes.items() if s["type"] == "sample"]
        where = (f"after site {sites[-1][0]!r} (value shape {_shape_of(sites[-1][1])})" if sites
                 else "before its first sample site")
        message = _without_shapes(e)
        raise ModelError(f"{call}: the {role} raised {type(e).__name__} {where}"
                         f"{detail}: {message}") from e


def _without_shapes(e: Exception) -> str:
    """The exception's message without the table of trace shapes Pyro appends to it."""
    return re.split(r"\n\s*Trace Shapes:", str(e))[0]


def user_error(where: str, loss, e: Exception) -> ModelError:
    """pyro_lvm's sentence in front of an error that a Pyro objective (``loss``) raised while
    running the user's model or guide; ``where`` names the call and the step or rows.

    >>> import pyro
    >>> str(user_error("fit: step 3", pyro.infer.Trace_ELBO(), RuntimeError("bad shape")))
    'fit: step 3: Trace_ELBO raised RuntimeError inside the model or guide: bad shape'
    """
    message = _without_shapes(e)
    return ModelError(f"{where}: {type(loss).__name__} raised {type(e).__name__} inside the "
                      f"model or guide: {message}")


# what user code (and Pyro running it) raises
USER_ERRORS = (ValueError, RuntimeError, IndexError, TypeError, KeyError, NotImplementedError)


@contextmanager
def reporting_user_errors(where: str, loss):
    """Re-raise an error that ``loss`` raised inside the user's model or guide as
    :func:`user_error` (pyro_lvm's own errors pass unchanged).

    >>> import pyro
    >>> try:
    ...     with reporting_user_errors("evaluate_loss (rows 0..9)", pyro.infer.Trace_ELBO()):
    ...         raise IndexError("index 12 is out of bounds")
    ... except ModelError as e:
    ...     print(str(e)[:48])
    evaluate_loss (rows 0..9): Trace_ELBO raised Ind
    """
    try:
        yield
    except PairError:
        raise
    except USER_ERRORS as e:
        raise user_error(where, loss, e) from e


# -- the sites of a pair --------------------------------------------------------------------

@dataclass
class PairSites:
    """How a model/guide pair's sample sites divide (see :func:`pair_sites`)."""

    local_latents: list[str]          # model latents inside the data plate
    observed: list[str]               # model observations inside the data plate
    outer_observed: list[str]         # observations outside it (belong to no datapoint)
    global_latents: list[str]         # latents outside the data plate (model's or guide's)
    enumerated: list[str]             # model latents marked for enumeration, not sampled by
    #                                   the guide (marginalized exactly)
    guide_latents: list[str]          # the guide's latent sites, in order
    discrete_guide_sites: list[str]   # guide latents without rsample (Categorical, ...)
    misplaced: list[str]              # local in the model, outside the plate in the guide
    delta_guide_sites: list[str]      # guide latents that are point masses (MAP, AutoDelta)
    plate_dim: int | None             # dim of the data plate
    nesting: int                      # plate dimensions used by the pair
    kinds: dict[str, str] = field(default_factory=dict)  # guide site -> distribution name
    auxiliary: list[str] = field(default_factory=list)   # guide sites marked is_auxiliary
    #                                   that a Delta site of a model latent transforms
    #                                   (AutoNormal's z_unconstrained; AutoDiagonalNormal's
    #                                   joint latent, outside the plate, refused as such)
    loose_auxiliary: list[str] = field(default_factory=list)  # marked is_auxiliary, but no
    #                                   site of the model is a function of them
    outer_guide_sites: list[str] = field(default_factory=list)  # guide latents outside the
    #                                   data plate
    guide_observed: list[str] = field(default_factory=list)  # observed sites and
    #                                   pyro.factor terms of the guide

    @property
    def extra_guide_sites(self) -> list[str]:
        """Guide latents the model does not have, inside the data plate or outside it.
        Auxiliary sites that a Delta site of a model latent transforms (AutoNormal's
        ``z_unconstrained`` -> ``z``) belong to the guide's density and are not counted; sites
        merely marked ``is_auxiliary`` that no model site depends on are, and so are the
        guide's observed sites and ``pyro.factor`` terms (they would enter log q)."""
        return [s for s in self.guide_latents
                if s not in self.local_latents + self.global_latents + self.auxiliary
                ] + self.guide_observed

    def refuse_extra(self, call: str, data_plate: str = "data") -> None:
        """Raise the one message for guide sites the model does not have, naming the first
        (every objective and diagnostic refuses them: their -log q would enter log w alone)."""
        extra = self.extra_guide_sites
        if extra:
            raise PairError(extra_site_message(call, extra[0], data_plate,
                                               extra[0] in self.loose_auxiliary,
                                               extra[0] in self.outer_guide_sites,
                                               extra[0] in self.guide_observed))

    @property
    def missing(self) -> list[str]:
        """Model latents the guide neither samples nor lets the model enumerate."""
        return [s for s in self.local_latents
                if s not in self.guide_latents and s not in self.enumerated]

    @property
    def checkable(self) -> bool:
        """Whether the pair keeps the contract (so that it can be evaluated at all)."""
        return (not self.global_latents and not self.misplaced and not self.extra_guide_sites
                and not self.missing and not self.delta_guide_sites
                and bool(self.guide_latents or self.enumerated) and bool(self.observed))

    def refuse_global(self, call: str, data_plate: str = "data") -> None:
        """Raise the one message for global latents, naming the first such site."""
        if self.misplaced:
            raise PairError(
                f"{call}: guide site {self.misplaced[0]!r} is outside pyro.plate({data_plate!r}) "
                "in the guide but inside it in the model: sample it inside the guide's data "
                "plate too (with the same plate name and dim)")
        joint = [name for name in self.global_latents if name in self.auxiliary]
        if joint:
            raise PairError(
                f"{call}: guide site {joint[0]!r} is an auxiliary latent outside pyro.plate("
                f"{data_plate!r}): a guide such as AutoDiagonalNormal, AutoMultivariateNormal or "
                "AutoIAFNormal draws every datapoint's latents as one vector, which couples the "
                "datapoints. Use a guide with one posterior per datapoint: AutoNormal (on "
                "all rows at once: its parameters are sized by the plate), or "
                "pyro_lvm.guides' AmortizedNormal, AmortizedMultivariateNormal, AmortizedFlow "
                "(or their PerDatapoint versions, which take minibatches)")
        if self.global_latents:
            raise PairError(global_latent_message(call, self.global_latents[0], data_plate))


def refuse_fixed_size(guide, rows: int, num_data: int, call: str, data_plate: str = "data",
                      local_latents=()) -> None:
    """Refuse a Pyro AutoGuide with per-datapoint sites run on ``rows`` < ``num_data`` rows:
    its parameters are sized by the data plate's size when first run, so a part of the rows
    would reuse the posteriors of other rows by position (silently when the sizes agree, as
    minibatches of one size do). Its sites are read from its prototype trace once it has
    one, else ``local_latents``.

    >>> refuse_fixed_size(lambda x: None, 50, 300, "fit")  # not an AutoGuide: nothing to say
    """
    from pyro.infer.autoguide import AutoGuide

    owner = getattr(guide, "__self__", guide)
    if not isinstance(owner, AutoGuide) or rows >= num_data:
        return
    prototype = getattr(owner, "prototype_trace", None)
    if prototype is not None:
        local_latents = [name for name, site in sample_sites(prototype)
                         if not site["is_observed"]
                         and any(f.name == data_plate for f in site["cond_indep_stack"])]
    if local_latents:
        raise PairError(
            f"{call}: the guide is Pyro's {type(owner).__name__}, whose parameters for the "
            f"per-datapoint site {local_latents[0]!r} are sized by pyro.plate({data_plate!r})'s "
            f"size, here a batch of {rows} of the {num_data} rows: each batch would reuse the "
            "same posteriors by position, a wrong number without an error. Run it on all "
            f"{num_data} rows at once (fit's batch_size, a diagnostic's batch_size or "
            "chunk_size), or use pyro_lvm.guides.PerDatapointNormal (one posterior per row, "
            "indexed by the rows of each batch) or an amortized guide "
            "(pyro_lvm.guides.AmortizedNormal)")


def extra_site_message(call: str, name: str, data_plate: str = "data",
                       auxiliary: bool = False, outside: bool = False,
                       observed: bool = False) -> str:
    """The one sentence that refuses a guide site the model does not have.

    >>> extra_site_message("log_likelihood", "aux")[:68]
    "log_likelihood: guide site 'aux' is not a latent site of the model: "
    """
    where = f" (it is outside pyro.plate({data_plate!r}))" if outside else ""
    if observed:
        return (f"{call}: guide site {name!r} is observed in the guide (obs= or pyro.factor), "
                "so it is not a latent site of the model: its log-density would enter log w "
                "as -log q, a wrong number. Remove it from the guide; a term of the joint "
                "density belongs in the model")
    if auxiliary:
        return (f"{call}: guide site {name!r}{where} is marked infer={{'is_auxiliary': True}} "
                "but is not a latent site of the model, and no latent site of the model is a "
                "function of it (as AutoNormal's Delta at 'z' is of 'z_unconstrained'): its "
                "log q would enter log w alone, a wrong number. Remove it from the guide, "
                "sample it in the model too, or make a model latent's guide site a "
                "pyro.sample of dist.Delta(f(value), log_density=...) of it")
    return (f"{call}: guide site {name!r}{where} is not a latent site of the model: it would "
            "enter log w as -log q alone, a wrong number (Pyro only warns 'Found "
            "non-auxiliary vars in guide'). Remove it from the guide, or sample it in the "
            "model too (an auxiliary variable belongs to both)")


def global_latent_message(call: str, name: str, data_plate: str = "data") -> str:
    """The one sentence that refuses a global latent site.

    >>> global_latent_message("bayes_loop", "mu")[:58]
    "bayes_loop: latent site 'mu' is outside pyro.plate('data')"
    """
    return (f"{call}: latent site {name!r} is outside pyro.plate({data_plate!r}) (a global "
            f"latent): {call} works per datapoint, and a global latent couples all of them. "
            "Make it a parameter (pyro.param), fit it with Trace_ELBO and condition the model "
            "on its value (pyro.condition), or move it inside the data plate")


def pair_sites(model, guide, args=(), kwargs=None, data_plate: str = "data",
               call: str = "pyro_lvm") -> PairSites:
    """Run the guide and the model replayed on it once (no gradients, no random numbers
    consumed, nothing recorded in the param store's gradients) and classify every site.

    >>> import pyro
    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     mu = pyro.sample("mu", dist.Normal(0., 1.))
    ...     with pyro.plate("data", x.shape[0]):
    ...         z = pyro.sample("z", dist.Normal(mu, 1.))
    ...         pyro.sample("x", dist.Normal(z, 1.), obs=x)
    >>> def guide(x):
    ...     pyro.sample("mu", dist.Normal(0., 1.))
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("z", dist.Normal(x, 1.))
    >>> s = pair_sites(model, guide, (torch.zeros(4),))
    >>> s.local_latents, s.observed, s.global_latents, s.plate_dim, s.nesting
    (['z'], ['x'], ['mu'], -1, 1)
    """
    guide_trace, model_trace = _trial_run(model, guide, args, kwargs, call)
    local, observed, outer, global_, enumerated = [], [], [], [], []
    guide_latents, discrete, kinds, delta, outside = [], [], {}, [], []
    plate_dim, dims = None, []
    for trace in (model_trace, guide_trace):
        for _, site in sample_sites(trace):
            dims += [f.dim for f in site["cond_indep_stack"] if f.vectorized]
    model_latents = {name for name, site in sample_sites(model_trace) if not site["is_observed"]}
    auxiliary, loose, fed = auxiliary_roles(guide, guide_trace, args, kwargs, model_latents,
                                            call)
    guide_observed = []
    for name, site in sample_sites(guide_trace):
        if site["is_observed"]:
            guide_observed.append(name)
            continue
        guide_latents.append(name)
        kinds[name] = type(site["fn"]).__name__
        if not getattr(site["fn"], "has_rsample", False):
            discrete.append(name)
        if _is_point_mass(site["fn"]) and name not in fed:  # AutoNormal: a Delta of an auxiliary
            delta.append(name)
        if data_frame(site, data_plate) is None:
            outside.append(name)
            # a guide-only site outside the plate is an extra site, not a global latent
            if name in model_latents or name in auxiliary:
                global_.append(name)
    for name, site in sample_sites(model_trace):
        frame = data_frame(site, data_plate)
        if frame is not None:
            plate_dim = frame.dim
        if site["is_observed"]:
            (observed if frame is not None else outer).append(name)
            continue
        if frame is None:
            if name not in global_:
                global_.append(name)
            continue
        local.append(name)
        if name not in guide_trace.nodes and site["infer"].get("enumerate") == "parallel":
            enumerated.append(name)
    if plate_dim is None:
        for _, site in sample_sites(guide_trace):
            frame = data_frame(site, data_plate)
            if frame is not None:
                plate_dim = frame.dim
    misplaced = [name for name in global_ if name in local]
    global_ = [name for name in global_ if name not in local]
    return PairSites(local, observed, outer, global_, enumerated, guide_latents, discrete,
                     misplaced, delta, plate_dim, -min(dims) if dims else 0, kinds, auxiliary,
                     loose, outside, guide_observed)


def auxiliary_roles(guide, guide_trace, args=(), kwargs=None, model_latents=None,
                    call: str = "pyro_lvm") -> tuple[list[str], list[str], set[str]]:
    """Which of the guide's sites marked ``infer={"is_auxiliary": True}`` belong to its
    density: ``(transported, loose, fed)``.

    An auxiliary draw a is part of q only through a Delta site whose value is a function of
    it (AutoNormal: z = T(a), with log_density = log |da/dz|, so that log q(a) + log_density
    = log q(z)). Each auxiliary site is perturbed in turn (the guide rerun with its value
    moved and every other non-Delta draw held): it is *transported* when the value of a
    Delta site (one of ``model_latents``, if given) changes, else *loose* (its log q would
    enter log w alone). ``fed``: the Delta sites that moved (not point estimates).

    >>> import pyro
    >>> import pyro.distributions as dist
    >>> def guide(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         a = pyro.sample("a", dist.Normal(x, 1.), infer={"is_auxiliary": True})
    ...         pyro.sample("z", dist.Delta(a.exp()))
    ...         pyro.sample("b", dist.Normal(0., 1.), infer={"is_auxiliary": True})
    >>> g = poutine.trace(guide).get_trace(torch.zeros(3))
    >>> auxiliary_roles(guide, g, (torch.zeros(3),))
    (['a'], ['b'], {'z'})
    """
    latents = [(name, site) for name, site in sample_sites(guide_trace)
               if not site["is_observed"]]
    marked = [name for name, site in latents if site["infer"].get("is_auxiliary")]
    if not marked:
        return [], [], set()
    deltas = [name for name, site in latents if _is_delta(site["fn"])
              and name not in marked and (model_latents is None or name in model_latents)]
    held = {name: site["value"] for name, site in latents if name not in deltas}
    transported, loose, fed = [], [], set()
    for name in marked:
        value = held[name]
        moved = value + 1 if value.dtype.is_floating_point else value
        changed = set()
        if deltas and moved is not value:
            with trial():
                again = run_traced(poutine.condition(guide, data={**held, name: moved}), args,
                                   kwargs, call, "guide")
            changed = {d for d in deltas if d in again.nodes and not _same(
                again.nodes[d]["value"], guide_trace.nodes[d]["value"])}
        (transported if changed else loose).append(name)
        fed |= changed
    return transported, loose, fed


def _same(a, b) -> bool:
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and bool(torch.equal(a, b)))


def _is_delta(fn) -> bool:
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return type(fn).__name__ == "Delta"


def _is_point_mass(fn) -> bool:
    """A Delta without a density of its own (``log_density`` 0): a point estimate."""
    if not _is_delta(fn):
        return False
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    density = getattr(fn, "log_density", 0.0)
    return not isinstance(density, torch.Tensor) or not bool(density.ne(0).any())


def _trial_run(model, guide, args, kwargs, call):
    # a trial run must not consume random numbers: the first step would differ from a rerun
    with trial():
        guide_trace = run_traced(guide, args, kwargs, call, "guide")
        model_trace = run_traced(poutine.replay(model, trace=guide_trace), args, kwargs,
                                 call, "model")
    return guide_trace, model_trace


def plate_nesting(model, guide, args=(), kwargs=None) -> int:
    """How many plate dimensions the model and guide use (as Pyro's ELBO guesses it).

    >>> import pyro
    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0], dim=-2):
    ...         pyro.sample("x", dist.Normal(0., 1.).expand([x.shape[0], 1]), obs=x)
    >>> plate_nesting(model, lambda x: None, (torch.zeros(3, 1),))
    2
    """
    return pair_sites(model, guide, args, kwargs).nesting


def refuse_discrete(sites: PairSites, call: str) -> None:
    """Training objectives need rsample at every guide site: refuse, naming the site.

    >>> import pyro
    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         c = pyro.sample("c", dist.Bernoulli(0.5))
    ...         pyro.sample("x", dist.Normal(c, 1.), obs=x)
    >>> def guide(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("c", dist.Bernoulli(0.3))
    >>> try:
    ...     refuse_discrete(pair_sites(model, guide, (torch.zeros(3),)), "IWAE")
    ... except PairError as e:
    ...     print(str(e)[:62])
    IWAE: guide site 'c' (Bernoulli) cannot be reparameterized (no
    """
    if sites.discrete_guide_sites:
        name = sites.discrete_guide_sites[0]
        raise PairError(
            f"{call}: guide site {name!r} ({sites.kinds.get(name, '?')}) cannot be "
            "reparameterized (no rsample): the "
            "importance-weighted objectives differentiate through every guide draw. Marginalize "
            "the site in the model (infer={'enumerate': 'parallel'}, no guide site), or train "
            "with pyro.infer.TraceGraph_ELBO; the diagnostics (log_likelihood, information, "
            "bayes_loop, AggregatePosterior) accept it as it is")


# -- who owns which parameter ---------------------------------------------------------------

@dataclass
class ParamRoles:
    """Parameters (unconstrained tensors) by use: ``model`` are read only by the model's
    log-densities, ``guide`` only by the guide's distributions, ``shared`` by both."""

    model: list[torch.Tensor]
    guide: list[torch.Tensor]
    shared: list[torch.Tensor]


def _reachable_leaves(roots, stop) -> set[int]:
    """ids of the leaf tensors the autograd graph of ``roots`` reaches, not walking into the
    nodes in ``stop``."""
    stack = [r.grad_fn for r in roots if isinstance(r, torch.Tensor) and r.grad_fn is not None]
    leaves = {id(r) for r in roots if isinstance(r, torch.Tensor) and r.requires_grad
              and r.grad_fn is None}
    seen = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in stop:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return leaves


def param_roles(model_trace, guide_trace) -> ParamRoles:
    """Split the parameters registered in either trace by what uses them.

    The guide's parameters are those its sites' log-densities depend on (its distributions
    and, through its draws, the encoder); the model's are those the model's log-densities
    depend on *other than through the guide's draws* (the walk stops at the draws). The traces
    need their log-densities computed with gradients on. A parameter in both is shared and
    gets both parts of the gradient.

    >>> import pyro
    >>> import pyro.distributions as dist
    >>> def model(x):
    ...     w = pyro.param("w", torch.ones(()))
    ...     with pyro.plate("data", x.shape[0]):
    ...         z = pyro.sample("z", dist.Normal(0., 1.))
    ...         pyro.sample("x", dist.Normal(w * z, 1.), obs=x)
    >>> def guide(x):
    ...     pyro.param("w", torch.ones(()))     # registered here too, but unused
    ...     a = pyro.param("a", torch.ones(()))
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("z", dist.Normal(a * x, 1.))
    >>> g = poutine.trace(guide).get_trace(torch.ones(3))
    >>> m = poutine.trace(poutine.replay(model, trace=g)).get_trace(torch.ones(3))
    >>> m.compute_log_prob(); g.compute_log_prob()
    >>> roles = param_roles(m, g)
    >>> [pyro.get_param_store().param_name(p) for p in roles.guide + roles.model]
    ['a', 'w']
    """
    params = {}
    for trace in (model_trace, guide_trace):
        for site in trace.nodes.values():
            if site["type"] == "param":
                u = site["value"].unconstrained()
                if u.requires_grad:
                    params[id(u)] = u
    guide_roots, stop = [], set()
    for _, site in sample_sites(guide_trace):
        if "log_prob" in site:
            guide_roots.append(site["log_prob"])
        if not site["is_observed"] and getattr(site["value"], "grad_fn", None) is not None:
            stop.add(site["value"].grad_fn)
    model_roots = [site["log_prob"] for _, site in sample_sites(model_trace) if "log_prob" in site]
    in_guide = _reachable_leaves(guide_roots, set())
    in_model = _reachable_leaves(model_roots, stop)
    roles = ParamRoles([], [], [])
    for key, p in params.items():
        if key in in_guide and key in in_model:
            roles.shared.append(p)
        elif key in in_guide:
            roles.guide.append(p)
        else:  # the model's, or used by neither (it then gets no gradient)
            roles.model.append(p)
    return roles


# -- the guide's dependency structure -------------------------------------------------------

def guide_dependencies(guide, args=(), kwargs=None, data_plate: str = "data",
                       call: str = "pyro_lvm") -> dict[str, set[str]]:
    """For each latent site of the guide, the other guide latents its distribution depends on
    (Pyro's ``pyro.infer.inspect.get_dependencies`` on the guide run as a program).

    >>> import pyro
    >>> import pyro.distributions as dist
    >>> def guide(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         z1 = pyro.sample("z1", dist.Normal(x, 1.))
    ...         pyro.sample("z2", dist.Normal(z1, 1.))
    >>> guide_dependencies(guide, (torch.zeros(3),))
    {'z1': set(), 'z2': {'z1'}}
    """
    from pyro.infer.inspect import get_dependencies

    with trial():
        try:
            deps = get_dependencies(guide, tuple(args), kwargs or {})["prior_dependencies"]
        except Exception as e:
            raise ModelError(f"{call}: could not read the guide's dependency structure "
                             f"(pyro.infer.inspect.get_dependencies raised "
                             f"{type(e).__name__}: {e})") from e
    return {name: {u for u in upstream if u != name} for name, upstream in deps.items()}


# -- per-pair caches ------------------------------------------------------------------------

def program_owner(fn) -> torch.nn.Module | None:
    """The nn.Module a model/guide program belongs to: the module itself, or a bound
    method's owner; None for a plain function.

    >>> lin = torch.nn.Linear(2, 2)
    >>> program_owner(lin) is lin, program_owner(lin.forward) is lin, program_owner(print)
    (True, True, None)
    """
    if isinstance(fn, torch.nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def program_device(*programs) -> torch.device:
    """Where the programs' parameters live: the device of the first nn.Module parameter of
    their owners (:func:`program_owner`), else the CPU (plain functions with ``pyro.param``
    keep theirs in the param store, read lazily).

    >>> program_device(torch.nn.Linear(2, 2).forward, print)
    device(type='cpu')
    """
    return next((p.device for o in map(program_owner, programs) if o is not None
                 for p in o.parameters()), torch.device("cpu"))


def rows_for(data, *programs, name: str = "data"):
    """``data`` as :class:`~pyro_lvm.rows.Rows` for a diagnostic of ``programs``: a tensor
    stays where it is; a Dataset or DataLoader is read onto the programs' device."""
    rows = as_rows(data, name)
    return rows if isinstance(rows, TensorRows) else rows.to(program_device(*programs))


def identity(fn):
    """A stable key for a function or bound method (bound methods are new objects on every
    attribute access): the function and the object it is bound to.

    >>> class Model:
    ...     def model(self, x): pass
    >>> m = Model()
    >>> identity(m.model) == identity(m.model), m.model is m.model
    (True, False)
    """
    return (getattr(fn, "__func__", fn), getattr(fn, "__self__", None))


def _ref(obj):
    if obj is None:
        return lambda: None
    try:
        return weakref.ref(obj)
    except TypeError:  # not weak-referenceable: hold it
        return lambda: obj


class PairCache:
    """Results cached per model/guide pair and key, without keeping the pair alive: an entry
    whose programs were garbage-collected (their ids possibly reused) is never returned.

    >>> cache = PairCache()
    >>> f = lambda x: None
    >>> cache.get(f, f, "shape") is None
    True
    >>> cache.put(f, f, "shape", 42)
    >>> cache.get(f, f, "shape")
    42
    """

    def __init__(self):
        self._store: dict = {}

    def _key(self, model, guide, key):
        objs = (*identity(model), *identity(guide))
        return tuple(id(o) for o in objs) + (key,), objs

    def get(self, model, guide, key):
        k, objs = self._key(model, guide, key)
        entry = self._store.get(k)
        if entry is None:
            return None
        refs, value = entry
        if any(r() is not o for r, o in zip(refs, objs, strict=True)):
            del self._store[k]
            return None
        return value

    def put(self, model, guide, key, value) -> None:
        k, objs = self._key(model, guide, key)
        self._store[k] = ([_ref(o) for o in objs], value)

    def clear(self) -> None:
        self._store.clear()


def row_shapes(args, kwargs=None) -> tuple:
    """A cache key of a call's arguments that does not change with the batch size: per-row
    shapes and dtypes of tensors, values of hashable arguments, types of the rest; keyword
    arguments by name.

    >>> row_shapes((torch.zeros(5, 3), 2), {"y": None})
    (((3,), torch.float32), ('int', 2), ('y', ('NoneType', None)))
    """
    def key(a):
        if isinstance(a, torch.Tensor):
            return tuple(a.shape[1:]), a.dtype
        try:
            hash(a)
            return type(a).__name__, a
        except TypeError:
            return type(a).__name__

    return tuple(key(a) for a in args) + tuple((k, key(v)) for k, v in
                                               sorted((kwargs or {}).items()))

