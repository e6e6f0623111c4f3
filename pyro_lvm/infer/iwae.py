"""Importance-weighted objectives for Pyro: IWAE, MIWAE, CIWAE, PIWAE with reparameterized,
sticking-the-landing and doubly-reparameterized gradients.

Every objective is spelt the same way: K, the particles per group, is ``num_particles`` and
the only positional argument; M, the number of independent groups, is the keyword
``num_outer``. With log weights lw[m, k, n] of M groups of K particles per datapoint (see
``importance``):

- ``IWAE(K)`` (Burda et al. 2016, eq. 8):          IWAE_K = log (1/K) sum_k w_k
- ``MIWAE(K, num_outer=M)`` (Rainforth et al. 2018): (1/M) sum_m IWAE_K(group m)
- ``CIWAE(K, beta=b)`` (Rainforth et al. 2018):      b * ELBO + (1 - b) * IWAE_K, on the same draws
- ``PIWAE(K, num_outer=M)`` (Rainforth et al. 2018): the model's parameters follow IWAE_MK,
  the guide's follow MIWAE(K, num_outer=M)

The bound is per datapoint; a minibatch's subsample scale N/B multiplies it outside the
logsumexp. Gradient estimators for the guide's parameters (:class:`Estimator`; the model's
always get the gradient of their objective):

- ``"reparam"``: the reparameterization gradient of the bound.
- ``"stl"``: sticking the landing (Roeder et al. 2017): the direct (score) dependence of
  log q on the guide's parameters is removed, only the path through z is kept. Unbiased for
  the ELBO; biased for IWAE with K > 1 (Tucker et al. 2019).
- ``"dreg"``: doubly reparameterized (Tucker et al. 2019, eq. 7): the IWAE part becomes
  sum_k w~_k^2 d log w_k / dz_k dz_k / dphi (w~ normalized within a group), the full
  pathwise derivative through the model *and* the guide with only the direct dependence of
  log q on phi stopped; an ELBO part (CIWAE) gets the STL gradient.

Which parameters are the model's and which the guide's is decided by use (the autograd graph,
:func:`pyro_lvm.contract.param_roles`), not by which program registered them: a module
registered by both (``pyro.module("dmm", self)`` in model and guide) still has an encoder
that only the guide reads. A parameter read by both gets both parts of the gradient: the
model objective's gradient of its direct dependence (the draws held fixed) plus the guide
estimator's gradient of its dependence through the guide.
"""

from __future__ import annotations

import enum
import functools
import math
import warnings

import torch
from pyro.infer import ELBO

from .._checks import check_positive_int
from ..contract import PairCache, data_frame, param_roles
from .importance import direct_log_q, importance_sample, model_log_joint
from .particles import VECTORIZE

__all__ = ["Estimator", "ImportanceWeightedELBO", "IWAE", "MIWAE", "CIWAE", "PIWAE"]

_INF = float("inf")


class Estimator(str, enum.Enum):
    """The gradient estimator for the guide's parameters (the model's always get the gradient
    of their own objective). Members are strings: ``estimator="dreg"`` and
    ``estimator=Estimator.DREG`` mean the same.

    - ``REPARAM``: the reparameterization gradient of the bound (Burda et al. 2016).
    - ``STL``: sticking the landing (Roeder et al. 2017): the path through z only, the direct
      dependence of log q on the guide's parameters dropped.
    - ``DREG``: doubly reparameterized (Tucker et al. 2019, eq. 7): squared normalized weights
      times the full pathwise derivative of log w.

    >>> Estimator("dreg") is Estimator.DREG, Estimator.STL == "stl"
    (True, True)
    >>> [str(e) for e in Estimator]
    ['reparam', 'stl', 'dreg']
    """

    REPARAM = "reparam"
    STL = "stl"
    DREG = "dreg"

    def __str__(self) -> str:
        return self.value


def _estimator(value) -> Estimator:
    """``value`` as an :class:`Estimator`, or a ValueError listing the choices."""
    try:
        return Estimator(value)
    except ValueError:
        choices = ", ".join(repr(e.value) for e in Estimator)
        raise ValueError(f"estimator must be one of {choices} (pyro_lvm.infer.Estimator), "
                         f"got {value!r}") from None


def __getattr__(name: str):
    if name == "ESTIMATORS":  # deprecated alias, kept for one release
        warnings.warn("pyro_lvm.infer.iwae.ESTIMATORS is deprecated: use pyro_lvm.infer.Estimator "
                      "(its members are the strings 'reparam', 'stl', 'dreg')",
                      DeprecationWarning, stacklevel=2)
        return tuple(e.value for e in Estimator)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _show(value) -> str:
    return repr(value.value if isinstance(value, Estimator) else value)


def _deprecated_positional(old_order: tuple[str, ...]):
    """Let ``__init__`` still take the positional arguments of its old signature, in the old
    order ``old_order``, with a DeprecationWarning that spells the call the new way (K first
    and alone, the rest by keyword)."""

    def wrap(init):
        call = init.__qualname__.split(".")[0]

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            legacy = len(args) > 1 or (len(args) == 1 and "num_particles" in kwargs
                                       and old_order[0] != "num_particles")
            if not legacy:
                return init(self, *args, **kwargs)
            if len(args) > len(old_order):
                raise TypeError(f"{call}() takes at most {len(old_order)} positional arguments "
                                f"({len(args)} given)")
            old = dict(zip(old_order[:len(args)], args, strict=True))
            for name in old:
                if name in kwargs:
                    raise TypeError(f"{call}() got multiple values for argument {name!r}")
            given = ", ".join([_show(a) for a in args]
                              + [f"{k}={_show(v)}" for k, v in kwargs.items()])
            rest = {**old, **kwargs}
            k = rest.pop("num_particles")
            new = ", ".join([_show(k)] + [f"{n}={_show(v)}" for n, v in rest.items()])
            order = ", ".join(old_order[:max(len(args), 2)])
            warnings.warn(
                f"{call}({given}) reads its arguments in the old order {call}({order}), "
                f"deprecated and to be removed in the next release: write {call}({new}) "
                "(K = num_particles comes first and alone, everything else by keyword)",
                DeprecationWarning, stacklevel=2)
            return init(self, **old, **kwargs)

        return __init__

    return wrap


class ImportanceWeightedELBO(ELBO):
    """The importance-weighted bound family as a Pyro ELBO (``loss``, ``loss_and_grads``,
    ``differentiable_loss``); its loss is the negative bound, summed over the data set.
    IWAE: Burda et al. 2016; MIWAE, CIWAE, PIWAE: Rainforth et al. 2018. :class:`IWAE`,
    :class:`MIWAE`, :class:`CIWAE` and :class:`PIWAE` are its named special cases.

    Args:
        num_particles: K, particles per group (the only positional argument).
        num_outer: M, independent groups of K particles (MIWAE); the bound is their mean.
        beta: CIWAE mixing weight in [0, 1]: beta * ELBO + (1 - beta) * IWAE. None: plain.
        estimator: the gradient estimator of the guide's parameters, an :class:`Estimator`
            or its string: "reparam", "stl" or "dreg".
        partitioned: PIWAE: the model's parameters follow IWAE over all M*K particles,
            the guide's follow MIWAE. The reported loss is then -IWAE_MK.
        data_plate: name of the plate holding the datapoints.
        max_plate_nesting: the model's plate depth; default: found from the pair.
        vectorize: "auto" (default): draw all M*K particles in one vectorized pass once a
            check has shown that the pair broadcasts over a leading particle dimension, else
            one at a time with a warning; True: vectorize, a failed check is an error; False:
            one particle at a time (any model).

    Attributes:
        num_particles: K (also what Pyro's ELBO base class holds under that name).
        num_outer: M.
        total_particles: M*K, the particles drawn per datapoint in one evaluation.
        estimator: an :class:`Estimator`; beta, partitioned, data_plate, vectorize: as given.

    Latent sites outside the data plate,
    model latents the guide does not sample and guide sites without ``rsample`` are refused
    with an error naming the site.

    Example:
        >>> import pyro
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> x = ppca.sample(10)
        >>> iwae = ImportanceWeightedELBO(8, num_outer=2, estimator="dreg")
        >>> iwae.num_particles, iwae.num_outer, iwae.total_particles
        (8, 2, 16)
        >>> exact = -ppca.log_likelihood(x).sum().item()
        >>> abs(iwae.loss(ppca.model, ppca.exact_posterior, x) - exact) < 1e-3
        True
        >>> svi = pyro.infer.SVI(ppca.model, ppca.guide, pyro.optim.Adam({"lr": 1e-2}), iwae)
        >>> loss = svi.step(x)
    """

    _REPR = ("num_particles", "num_outer", "beta", "estimator", "partitioned")

    @_deprecated_positional(("num_particles", "num_outer", "beta", "estimator", "partitioned",
                             "data_plate", "max_plate_nesting", "vectorize"))
    def __init__(self, num_particles: int = 1, *, num_outer: int = 1, beta: float | None = None,
                 estimator: Estimator | str = Estimator.REPARAM, partitioned: bool = False,
                 data_plate: str = "data", max_plate_nesting: float = _INF,
                 vectorize: bool | str = "auto"):
        self.num_particles = check_positive_int(num_particles, "num_particles")
        self.num_outer = check_positive_int(num_outer, "num_outer")
        if beta is not None and not (isinstance(beta, int | float) and not isinstance(beta, bool)
                                     and 0.0 <= beta <= 1.0):
            raise ValueError(f"beta must be a number in [0, 1] or None, got {beta!r}")
        self.estimator = _estimator(estimator)
        if partitioned and beta is not None:
            raise ValueError("partitioned (PIWAE) and beta (CIWAE) cannot be combined")
        self.beta = None if beta is None else float(beta)
        self.partitioned = bool(partitioned)
        self.data_plate = data_plate
        if vectorize not in VECTORIZE:
            raise ValueError(f"vectorize must be True, False or 'auto', got {vectorize!r}")
        self.vectorize = vectorize
        # Pyro's ELBO reads num_particles (K here) only in methods this class does not use
        # (_get_traces and its helpers); of its state only max_plate_nesting is kept, counting
        # the one particle plate that holds all M*K particles, as Pyro counts its own.
        super().__init__(num_particles=self.num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)
        self.max_plate_nesting = max_plate_nesting + (1 if self.total_particles > 1 else 0)
        self._fixed_nesting = (None if max_plate_nesting == _INF else int(max_plate_nesting))
        self._roles = PairCache()
        self._one_backward = PairCache()  # per pair: whether DReG's one-pass form is exact

    @property
    def total_particles(self) -> int:
        """M*K: the particles drawn per datapoint in one evaluation."""
        return self.num_outer * self.num_particles

    @property
    def num_inner(self) -> int:
        """Deprecated: K, now ``num_particles``."""
        warnings.warn("ImportanceWeightedELBO.num_inner is deprecated: K is num_particles",
                      DeprecationWarning, stacklevel=2)
        return self.num_particles

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={_show(getattr(self, name))}" for name in self._REPR)
        return f"{type(self).__name__}({shown})"

    def _sample(self, model, guide, args, kwargs):
        """One draw of all M*K particles per datapoint."""
        return importance_sample(model, guide, args, kwargs, self.total_particles,
                                 self.data_plate, self._fixed_nesting, vectorize=self.vectorize,
                                 call="ImportanceWeightedELBO")

    def _get_trace(self, model, guide, args, kwargs):
        """Model and guide traces of one draw of the M*K particles. Pyro's ELBO declares this
        method abstract (without it the class cannot be instantiated); its callers there,
        ``_get_traces`` and ``_get_vectorized_trace``, are not used by this class, whose loss
        methods draw through :func:`~pyro_lvm.infer.importance.importance_sample`."""
        sample = self._sample(model, guide, args, kwargs)
        return sample.model_trace, sample.guide_trace

    # -- the bound -------------------------------------------------------------------------
    def _bound(self, lw: torch.Tensor):
        """(bound per datapoint, d bound / d lw, DReG's coefficients): lw has shape (M, K, B).

        d bound / d lw weights the STL pathwise term; DReG squares the IWAE part's normalized
        weights (Tucker et al. 2019, eq. 7) and keeps the ELBO part's 1/(MK).
        """
        m, k = self.num_outer, self.num_particles
        w = (lw - lw.logsumexp(1, keepdim=True)).exp().detach()  # normalized within groups
        bound = (lw.logsumexp(1) - math.log(k)).mean(0)
        coef, dreg = w / m, w.pow(2) / m
        if self.beta is not None:
            bound = self.beta * lw.mean((0, 1)) + (1 - self.beta) * bound
            coef = self.beta / (m * k) + (1 - self.beta) * coef
            dreg = self.beta / (m * k) + (1 - self.beta) * dreg
        return bound, coef, dreg

    def _compute(self, model, guide, args, kwargs):
        sample = self._sample(model, guide, args, kwargs)
        m, k = self.num_outer, self.num_particles
        lw = sample.log_weights.reshape(m, k, -1)
        outer = sample.outer_log_prob.mean()
        bound, coef, dreg = self._bound(lw)
        model_bound = bound
        if self.partitioned:
            model_bound = sample.log_weights.logsumexp(0) - math.log(m * k)
        scale = sample.data_scale
        value = scale * model_bound.sum() + outer  # also the model's surrogate
        return sample, lw, bound, coef, dreg, value, scale, outer

    def _surrogates(self, model, guide, args, kwargs):
        """(bound value, the guide's surrogate, model params, guide params). When no
        parameter is read by both programs the two surrogates are differentiated apart;
        otherwise the guide's surrogate becomes one surrogate right for every parameter and
        the parameter lists are None (as for the single-surrogate estimators)."""
        sample, lw, bound, coef, dreg, value, scale, outer = self._compute(
            model, guide, args, kwargs)
        if self.estimator == "reparam":
            guide_surrogate, c_guide = scale * bound.sum() + outer, coef
        else:
            score = direct_log_q(sample, guide, args, kwargs).reshape(lw.shape)
            # with K = 1 the normalized weight is 1: DReG's squared weights are STL's weights
            if self.estimator == "stl" or (self.num_particles == 1 and not self.partitioned):
                guide_surrogate = scale * (bound.sum() + (coef * score).sum()) + outer
                c_guide = coef
            else:
                if not self.partitioned and lw.requires_grad:
                    one = self._one_backward_dreg(model, guide, args, kwargs, sample, lw, coef,
                                                  dreg, score, value, scale, outer)
                    if one is not None:
                        return value, one, None, None
                guide_surrogate, c_guide = scale * (dreg * (lw + score)).sum() + outer, dreg
        return self._split(model, guide, args, kwargs, sample, lw, coef, value, scale,
                           guide_surrogate, c_guide)

    def _split(self, model, guide, args, kwargs, sample, lw, coef, value, scale,
               guide_surrogate, c_guide):
        """The surrogates of :meth:`_surrogates` when the model's and the guide's parameters
        follow different objectives (DReG the general way, PIWAE)."""
        if self._single_surrogate() or not guide_surrogate.requires_grad:
            if self.estimator != "reparam" and guide_surrogate.requires_grad:
                self._roles_of(model, guide, sample)  # warns if the guide owns no parameter
            return value, guide_surrogate, None, None
        roles = self._roles_of(model, guide, sample)
        if not roles.shared:
            return value, guide_surrogate, roles.model, roles.guide
        # A parameter read by both programs: the model objective's gradient of the model's
        # direct dependence, sum_k c_model_k d log p(x, z_k) with z_k held fixed, replaces the
        # c_guide-weighted share of it inside the guide's surrogate.
        c_model = coef
        if self.partitioned:
            c_model = torch.softmax(sample.log_weights, 0).reshape(lw.shape).detach()
        log_joint = model_log_joint(sample, model, args, kwargs).reshape(lw.shape)
        surrogate = guide_surrogate + scale * ((c_model - c_guide) * log_joint).sum()
        return value, surrogate, None, None

    def _one_backward_dreg(self, model, guide, args, kwargs, sample, lw, coef, dreg, score,
                           value, scale, outer):
        """DReG in one backward pass, or None where the pair does not allow it.

        The surrogate sum_k c_k (log w_k + log q(z_k^detached)) gives the model's parameters
        the bound's gradient sum_k c_k d log w_k (c = d bound / d log w) and cancels the direct
        dependence of log q on the guide's; a hook on each guide draw z_k multiplies the
        gradient arriving there by dreg_k / c_k (the normalized weight, for IWAE), so the
        guide's parameters get sum_k dreg_k d log w_k / dz_k dz_k / dphi, Tucker et al. (2019)
        eq. 7, as the hand-written estimator does. This needs every path from the guide's
        parameters to log w to pass through a draw exactly once: it fails for a flow whose
        log q reads its cached base draw, or a guide draw built from another. So on the first
        step for a pair (and parameter set) both gradients are computed and compared, and
        the verdict is cached; that step returns the one-pass gradient where they agree, the
        general one where they do not.
        """
        ratio = torch.where(coef > 0, dreg / coef.clamp_min(torch.finfo(coef.dtype).tiny),
                            torch.zeros_like(coef)).reshape(sample.log_weights.shape)
        surrogate = scale * (coef * (lw + score)).sum() + outer
        params, key = self._params_of(sample)
        verdict = self._one_backward.get(model, guide, key)
        if verdict is False or not params:  # (unregistered parameters: nothing to compare)
            return None
        if verdict is True:  # (a batch whose draws lack the layout: the general way)
            return surrogate if _scale_draw_gradients(sample, ratio) else None
        # the first step: the general computation's gradients first (before any hook)
        _, general, model_params, guide_params = self._split(
            model, guide, args, kwargs, sample, lw, coef, value, scale,
            scale * (dreg * (lw + score)).sum() + outer, dreg)
        if model_params is None:
            reference = _grads(general, params)
        else:
            found = dict(_group_grads(value, general, model_params, guide_params))
            reference = [found.get(p) for p in params]
        ok = _scale_draw_gradients(sample, ratio) and _close(_grads(surrogate, params),
                                                              reference)
        self._one_backward.put(model, guide, key, ok)
        if ok:  # every step then takes the same form (a resumed run repeats bit for bit)
            return surrogate
        pairs = [(p, g) for p, g in zip(params, reference, strict=True) if g is not None]
        return sum(((p * g).sum() for p, g in pairs), value.new_zeros(()))

    def _params_of(self, sample):
        """(the parameters the traces read, a cache key of them)."""
        params = {id(u): u for t in (sample.model_trace, sample.guide_trace)
                  for site in t.nodes.values() if site["type"] == "param"
                  for u in (site["value"].unconstrained(),) if u.requires_grad}
        key = tuple(sorted(params))
        return [params[k] for k in key], key

    def _roles_of(self, model, guide, sample):
        """The pair's parameters by use (cached per pair and parameter set)."""
        _, params = self._params_of(sample)
        roles = self._roles.get(model, guide, params)
        if roles is None:
            roles = param_roles(sample.model_trace, sample.guide_trace)
            self._roles.put(model, guide, params, roles)
            if self.estimator != "reparam" and not roles.guide:
                warnings.warn(
                    f"estimator={self.estimator.value!r}: the guide has no parameters of its own "
                    "(every parameter its distributions read is also read by the model, as a "
                    "VampPrior reads the encoder): each gets the model's gradient plus "
                    f"{self.estimator.upper()}'s for its guide part, and if the guide was meant "
                    "to have parameters, they are not reaching its distributions", UserWarning,
                    stacklevel=4)
        return roles

    def _single_surrogate(self) -> bool:
        """Whether one surrogate carries the right gradient for every parameter."""
        return not self.partitioned and (self.estimator != "dreg" or self.num_particles == 1)

    # -- the ELBO interface ----------------------------------------------------------------
    def loss(self, model, guide, *args, **kwargs) -> float:
        """The negative bound (a float), summed over the data set.

        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(3, 1)
        >>> x = ppca.sample(4)
        >>> isinstance(ImportanceWeightedELBO(5).loss(ppca.model, ppca.guide, x), float)
        True
        """
        with torch.no_grad():
            return -float(self._compute(model, guide, args, kwargs)[5])

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A scalar whose value is the negative bound and whose gradient, for every parameter
        of the model and guide, is the chosen estimator's (for a plain torch training loop).
        With DReG or PIWAE the gradient is split by parameter group, so only parameters
        registered with ``pyro.param`` / ``pyro.module`` receive it.

        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(3, 1)
        >>> loss = ImportanceWeightedELBO(5, estimator="stl").differentiable_loss(
        ...     ppca.model, ppca.guide, ppca.sample(4))
        >>> loss.backward()
        """
        value, s_guide, model_params, guide_params = self._surrogates(model, guide, args,
                                                                     kwargs)
        if model_params is None:
            return -(value.detach() + s_guide - s_guide.detach())
        # Different objectives per parameter group: precompute the gradients and return a
        # scalar whose gradient with respect to each parameter is exactly that. This needs
        # the parameters to be known: registered with pyro.param / pyro.module.
        if not model_params and not guide_params and s_guide.requires_grad:
            raise ValueError(
                f"differentiable_loss with estimator={self.estimator.value!r} / partitioned="
                f"{self.partitioned} splits the gradient by parameter group, and needs the "
                "parameters registered with pyro.param or pyro.module; none were")
        grads = _group_grads(value, s_guide, model_params, guide_params)
        surrogate = sum(((p * g).sum() for p, g in grads), value.new_zeros(()))
        return -(value.detach() + surrogate - surrogate.detach())

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Compute the negative bound and accumulate the estimator's gradient (of the loss)
        into ``.grad`` of every parameter; returns the loss as a float."""
        value, s_guide, model_params, guide_params = self._surrogates(model, guide, args,
                                                                     kwargs)
        if model_params is None:
            if s_guide.requires_grad:
                (-s_guide).backward(retain_graph=self.retain_graph)
        else:
            for p, g in _group_grads(value, s_guide, model_params, guide_params):
                p.grad = -g if p.grad is None else p.grad - g
        return -float(value.detach())


def _grads(surrogate, params) -> list:
    return list(torch.autograd.grad(surrogate, params, retain_graph=True, allow_unused=True))


def _close(got: list, want: list, rtol: float = 1e-3) -> bool:
    """Each parameter's gradient within ``rtol`` of the reference's norm (float rounding
    differs between the two computations; a wrong estimator differs by order one)."""
    for g, w in zip(got, want, strict=True):
        g = torch.zeros(()) if g is None else g.detach().double()
        w = torch.zeros(()) if w is None else w.detach().double()
        if float((g - w).norm()) > rtol * float(w.norm()) + 1e-12:
            return False
    return True


def _scale_draw_gradients(sample, ratio: torch.Tensor) -> bool:
    """Multiply the gradient reaching each guide draw z_kn by ratio[k, n] (a hook on every
    latent value of the sample's draws). False, with no hook set, when a draw's value does
    not have the (particles, rows) layout this needs."""
    hooks, start = [], 0
    batch = ratio.shape[1]
    for d in sample.draws:
        rows = ratio[start:start + d.num_particles]
        start += d.num_particles
        for name in sample.latent_sites:
            site = d.guide_trace.nodes[name]
            z = site["value"]
            if not z.requires_grad:
                continue
            frame = data_frame(site, sample.data_plate)
            end = z.dim() - site["fn"].event_dim  # batch dims end here
            shape = [1] * z.dim()
            at = end + frame.dim
            if at < 0 or z.shape[at] != batch:
                return False
            shape[at] = batch
            if d.vectorized:
                where = end - d.rank
                if where < 0 or z.shape[where] != d.num_particles:
                    return False
                shape[where] = d.num_particles
            hooks.append((z, rows.reshape(shape)))
    for z, r in hooks:
        z.register_hook(lambda g, r=r: g * r)
    return True


def _group_grads(s_model, s_guide, model_params, guide_params):
    """Gradients of the model surrogate for model params and of the guide's for guide params."""
    out = []
    for surrogate, params in ((s_model, model_params), (s_guide, guide_params)):
        if params and surrogate.requires_grad:
            grads = torch.autograd.grad(surrogate, params, retain_graph=True, allow_unused=True)
            out += [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    return out


class IWAE(ImportanceWeightedELBO):
    """IWAE_K = log (1/K) sum_k w_k, the importance-weighted bound (Burda et al. 2016, eq. 8).

    >>> IWAE(64, estimator="dreg")
    IWAE(num_particles=64, num_outer=1, beta=None, estimator='dreg')
    """

    _REPR = ImportanceWeightedELBO._REPR[:4]

    @_deprecated_positional(("num_particles", "estimator"))
    def __init__(self, num_particles: int, *, estimator: Estimator | str = Estimator.REPARAM,
                 data_plate: str = "data", max_plate_nesting: float = _INF,
                 vectorize: bool | str = "auto"):
        super().__init__(num_particles, estimator=estimator, data_plate=data_plate,
                         max_plate_nesting=max_plate_nesting, vectorize=vectorize)


class MIWAE(ImportanceWeightedELBO):
    """MIWAE: the mean of M independent IWAE_K bounds (Rainforth et al. 2018); K is
    ``num_particles``, M the keyword ``num_outer``.

    >>> loss = MIWAE(8, num_outer=4)
    >>> loss
    MIWAE(num_particles=8, num_outer=4, beta=None, estimator='reparam')
    >>> loss.total_particles
    32
    """

    _REPR = ImportanceWeightedELBO._REPR[:4]

    @_deprecated_positional(("num_outer", "num_particles", "estimator"))
    def __init__(self, num_particles: int, *, num_outer: int,
                 estimator: Estimator | str = Estimator.REPARAM, data_plate: str = "data",
                 max_plate_nesting: float = _INF, vectorize: bool | str = "auto"):
        super().__init__(num_particles, num_outer=num_outer, estimator=estimator,
                         data_plate=data_plate, max_plate_nesting=max_plate_nesting,
                         vectorize=vectorize)


class CIWAE(ImportanceWeightedELBO):
    """CIWAE: beta * ELBO + (1 - beta) * IWAE_K on the same K draws (Rainforth et al. 2018).

    >>> CIWAE(16, beta=0.5)
    CIWAE(num_particles=16, num_outer=1, beta=0.5, estimator='reparam')
    """

    _REPR = ImportanceWeightedELBO._REPR[:4]

    @_deprecated_positional(("num_particles", "beta", "estimator"))
    def __init__(self, num_particles: int, *, beta: float,
                 estimator: Estimator | str = Estimator.REPARAM, data_plate: str = "data",
                 max_plate_nesting: float = _INF, vectorize: bool | str = "auto"):
        super().__init__(num_particles, beta=beta, estimator=estimator, data_plate=data_plate,
                         max_plate_nesting=max_plate_nesting, vectorize=vectorize)


class PIWAE(ImportanceWeightedELBO):
    """PIWAE: the model's parameters follow IWAE over all M*K particles, the guide's follow
    MIWAE(K, num_outer=M) on the same draws (Rainforth et al. 2018).

    >>> loss = PIWAE(16, num_outer=4, estimator="dreg")
    >>> loss
    PIWAE(num_particles=16, num_outer=4, beta=None, estimator='dreg')
    >>> loss.partitioned
    True
    """

    _REPR = ImportanceWeightedELBO._REPR[:4]

    @_deprecated_positional(("num_outer", "num_particles", "estimator"))
    def __init__(self, num_particles: int, *, num_outer: int,
                 estimator: Estimator | str = Estimator.REPARAM, data_plate: str = "data",
                 max_plate_nesting: float = _INF, vectorize: bool | str = "auto"):
        super().__init__(num_particles, num_outer=num_outer, estimator=estimator,
                         partitioned=True, data_plate=data_plate,
                         max_plate_nesting=max_plate_nesting, vectorize=vectorize)
