"""Importance-weighted objectives for Pyro: IWAE, MIWAE, CIWAE, PIWAE with reparameterized,
sticking-the-landing and doubly-reparameterized gradients.

With log weights lw[m, k, n] of M groups of K particles per datapoint (see ``importance``):

- IWAE_K (Burda et al. 2016, eq. 8):     log (1/K) sum_k w_k
- MIWAE(M, K) (Rainforth et al. 2018):  (1/M) sum_m IWAE_K(group m)
- CIWAE(beta) (Rainforth et al. 2018):  beta * ELBO + (1 - beta) * IWAE_K, on the same draws
- PIWAE(M, K) (Rainforth et al. 2018):  the model's parameters follow IWAE_MK, the guide's
  follow MIWAE(M, K)

The bound is per datapoint; a minibatch's subsample scale N/B multiplies it outside the
logsumexp. Gradient estimators for the guide's parameters (the model's always get the
gradient of their objective):

- ``"reparam"``: the reparameterization gradient of the bound.
- ``"stl"``: sticking the landing (Roeder et al. 2017): the direct (score) dependence of
  log q on the guide's parameters is removed, only the path through z is kept. Unbiased for
  the ELBO; biased for IWAE with K > 1 (Tucker et al. 2018).
- ``"dreg"``: doubly reparameterized (Tucker et al. 2018, eq. 7): the IWAE part becomes
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

import math
import warnings

import torch
from pyro.infer import ELBO

from .._checks import check_positive_int
from ..contract import PairCache, param_roles
from .importance import direct_log_q, importance_sample, model_log_joint
from .particles import VECTORIZE

ESTIMATORS = ("reparam", "stl", "dreg")


class ImportanceWeightedELBO(ELBO):
    """The importance-weighted bound family as a Pyro ELBO (``loss``, ``loss_and_grads``,
    ``differentiable_loss``); its loss is the negative bound, summed over the data set.

    Args:
        num_particles: K, particles per group.
        num_outer: M, independent groups of K particles (MIWAE); the bound is their mean.
        beta: CIWAE mixing weight in [0, 1]: beta * ELBO + (1 - beta) * IWAE. None: plain.
        estimator: "reparam", "stl" or "dreg" (gradient of the guide's parameters).
        partitioned: PIWAE: the model's parameters follow IWAE over all M*K particles,
            the guide's follow MIWAE(M, K). The reported loss is then -IWAE_MK.
        data_plate: name of the plate holding the datapoints.
        vectorize: "auto" (default): draw all M*K particles in one vectorized pass once a
            check has shown that the pair broadcasts over a leading particle dimension, else
            one at a time with a warning; True: vectorize, a failed check is an error; False:
            one particle at a time (any model).

    Latent sites outside the data plate,
    model latents the guide does not sample and guide sites without ``rsample`` are refused
    with an error naming the site.

    Example:
        >>> import pyro
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> x = ppca.sample(10)
        >>> iwae = ImportanceWeightedELBO(num_particles=8, estimator="dreg")
        >>> exact = -ppca.log_likelihood(x).sum().item()
        >>> abs(iwae.loss(ppca.model, ppca.exact_posterior, x) - exact) < 1e-3
        True
        >>> svi = pyro.infer.SVI(ppca.model, ppca.guide, pyro.optim.Adam({"lr": 1e-2}), iwae)
        >>> loss = svi.step(x)
    """

    def __init__(self, num_particles: int = 1, num_outer: int = 1, beta: float | None = None,
                 estimator: str = "reparam", partitioned: bool = False,
                 data_plate: str = "data", max_plate_nesting: float = float("inf"),
                 vectorize: bool | str = "auto"):
        self.num_inner = check_positive_int(num_particles, "num_particles")
        self.num_outer = check_positive_int(num_outer, "num_outer")
        if beta is not None and not (isinstance(beta, int | float) and not isinstance(beta, bool)
                                     and 0.0 <= beta <= 1.0):
            raise ValueError(f"beta must be a number in [0, 1] or None, got {beta!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if partitioned and beta is not None:
            raise ValueError("partitioned (PIWAE) and beta (CIWAE) cannot be combined")
        self.beta = None if beta is None else float(beta)
        self.estimator = estimator
        self.partitioned = bool(partitioned)
        self.data_plate = data_plate
        if vectorize not in VECTORIZE:
            raise ValueError(f"vectorize must be True, False or 'auto', got {vectorize!r}")
        self.vectorize = vectorize
        super().__init__(num_particles=self.num_inner * self.num_outer,
                         max_plate_nesting=max_plate_nesting, vectorize_particles=True)
        self._fixed_nesting = (None if max_plate_nesting == float("inf")
                               else int(max_plate_nesting))
        self._roles = PairCache()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_particles={self.num_inner}, "
                f"num_outer={self.num_outer}, beta={self.beta}, estimator={self.estimator!r}, "
                f"partitioned={self.partitioned})")

    def _sample(self, model, guide, args, kwargs):
        """One draw of all M*K particles per datapoint."""
        return importance_sample(model, guide, args, kwargs, self.num_particles,
                                 self.data_plate, self._fixed_nesting, vectorize=self.vectorize,
                                 call=type(self).__name__)

    def _get_trace(self, model, guide, args, kwargs):
        """Model and guide traces of the (first) draw of the M*K particles."""
        sample = self._sample(model, guide, args, kwargs)
        return sample.model_trace, sample.guide_trace

    # -- the bound -------------------------------------------------------------------------
    def _bound(self, lw: torch.Tensor):
        """(bound per datapoint, d bound / d lw, DReG's coefficients): lw has shape (M, K, B).

        d bound / d lw weights the STL pathwise term; DReG squares the IWAE part's normalized
        weights (Tucker et al. 2018, eq. 7) and keeps the ELBO part's 1/(MK).
        """
        m, k = self.num_outer, self.num_inner
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
        m, k = self.num_outer, self.num_inner
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
            if self.estimator == "stl":
                guide_surrogate = scale * (bound.sum() + (coef * score).sum()) + outer
                c_guide = coef
            else:
                guide_surrogate, c_guide = scale * (dreg * (lw + score)).sum() + outer, dreg
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

    def _roles_of(self, model, guide, sample):
        """The pair's parameters by use (cached per pair and parameter set)."""
        params = tuple(sorted(id(site["value"].unconstrained())
                              for t in (sample.model_trace, sample.guide_trace)
                              for site in t.nodes.values() if site["type"] == "param"))
        roles = self._roles.get(model, guide, params)
        if roles is None:
            roles = param_roles(sample.model_trace, sample.guide_trace)
            self._roles.put(model, guide, params, roles)
            if self.estimator != "reparam" and not roles.guide:
                warnings.warn(
                    f"estimator={self.estimator!r}: the guide has no parameters of its own "
                    "(every parameter its distributions read is also read by the model, as a "
                    "VampPrior reads the encoder): each gets the model's gradient plus "
                    f"{self.estimator.upper()}'s for its guide part, and if the guide was meant "
                    "to have parameters, they are not reaching its distributions", UserWarning,
                    stacklevel=4)
        return roles

    def _single_surrogate(self) -> bool:
        """Whether one surrogate carries the right gradient for every parameter."""
        return not self.partitioned and self.estimator != "dreg"

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
                f"differentiable_loss with estimator={self.estimator!r} / partitioned="
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


def _group_grads(s_model, s_guide, model_params, guide_params):
    """Gradients of the model surrogate for model params and of the guide's for guide params."""
    out = []
    for surrogate, params in ((s_model, model_params), (s_guide, guide_params)):
        if params and surrogate.requires_grad:
            grads = torch.autograd.grad(surrogate, params, retain_graph=True, allow_unused=True)
            out += [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    return out


def IWAE(num_particles: int, estimator: str = "reparam", **kwargs) -> ImportanceWeightedELBO:
    """IWAE_K (Burda et al. 2016).

    >>> IWAE(64, estimator="dreg")  # doctest: +NORMALIZE_WHITESPACE
    ImportanceWeightedELBO(num_particles=64, num_outer=1, beta=None, estimator='dreg',
    partitioned=False)
    """
    return ImportanceWeightedELBO(num_particles, 1, estimator=estimator, **kwargs)


def MIWAE(num_outer: int, num_particles: int, estimator: str = "reparam",
          **kwargs) -> ImportanceWeightedELBO:
    """MIWAE(M, K): the mean of M independent IWAE_K bounds (Rainforth et al. 2018).

    >>> MIWAE(8, 8).num_particles
    64
    """
    return ImportanceWeightedELBO(num_particles, num_outer, estimator=estimator, **kwargs)


def CIWAE(num_particles: int, beta: float, estimator: str = "reparam",
          **kwargs) -> ImportanceWeightedELBO:
    """CIWAE(beta): beta * ELBO + (1 - beta) * IWAE_K on the same K draws (Rainforth et al.).

    >>> CIWAE(16, beta=0.5).beta
    0.5
    """
    return ImportanceWeightedELBO(num_particles, 1, beta=beta, estimator=estimator, **kwargs)


def PIWAE(num_outer: int, num_particles: int, estimator: str = "reparam",
          **kwargs) -> ImportanceWeightedELBO:
    """PIWAE(M, K): model by IWAE_MK, guide by MIWAE(M, K) (Rainforth et al. 2018).

    >>> PIWAE(4, 16).partitioned
    True
    """
    return ImportanceWeightedELBO(num_particles, num_outer, estimator=estimator,
                                  partitioned=True, **kwargs)
