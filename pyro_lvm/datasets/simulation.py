"""Data simulated from a model, and pyro_lvm's one simulator.

:func:`simulate` runs any ``model(x)`` with its observation sites un-conditioned and reads off
the trace which sites were observed; everything in pyro_lvm that simulates data calls it
(:func:`from_model`, ``diagnostics.bayes_loop``, ``diagnostics.sample_prior``, the built-in
models' ``sample``). It lives here, next to :func:`from_model`, because data sets are the
lowest layer: it needs only the model/guide contract (``contract.run_traced``), and
``pyro_lvm.handlers`` re-exports it. :func:`sparse_dictionary` draws sparse combinations of a
random dictionary, whose atoms and codes are known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pyro.poutine as poutine
import torch

from .._checks import check_positive_float, check_positive_int, to_float_tensor
from ..contract import PairError, run_traced, sample_sites
from ..rng import generator, seeded
from .dataset import _check_seed

__all__ = ["Simulated", "SimulatedSites", "SparseDictionary", "from_model", "simulate",
           "sparse_dictionary"]


class SimulatedSites(dict):
    """What :func:`simulate` returns: the value of every sample site by name (a dict), with
    ``observed``, the names of the sites the model observes (``obs=``, and ``pyro.factor``
    terms, which Pyro records as observed too, listed again in ``factors``), in the order the
    model reached them. They are read off the trace, where Pyro's ``uncondition`` marks every
    site it un-conditioned ``infer["was_observed"]`` -- never guessed from a value's shape.

    >>> sim = SimulatedSites({"z": torch.zeros(3), "x": torch.ones(3)}, observed=["x"])
    >>> sim.observed, sorted(sim.latents), sim.data(like=torch.zeros(3)).tolist()
    (('x',), ['z'], [1.0, 1.0, 1.0])
    """

    def __init__(self, values=(), observed=(), factors=()):
        super().__init__(values)
        self.observed = tuple(observed)
        self.factors = tuple(factors)

    @property
    def latents(self) -> dict[str, torch.Tensor]:
        """The value of every site the model does not observe, by name."""
        return {name: value for name, value in self.items() if name not in self.observed}

    def data(self, like: torch.Tensor | None = None, obs_site: str | None = None,
             call: str = "simulate") -> torch.Tensor:
        """The simulated data: the value of the model's one observation site (a ``pyro.factor``
        term is not data), or of ``obs_site`` when the model observes several. With ``like``
        (the data the model was run on), its shape must be the data's. Errors are
        :class:`~pyro_lvm.contract.PairError` (a ValueError) beginning with ``call``."""
        sites = [name for name in self.observed if name not in self.factors]
        if obs_site is None:
            if len(sites) != 1:
                raise PairError(f"{call} needs exactly one observed site (obs=x) to know which "
                                f"is the data, found {sites}; pass obs_site=")
            obs_site = sites[0]
        elif obs_site not in sites:
            raise PairError(f"{call}: obs_site={obs_site!r} is not an observed site of the "
                            f"model (observed: {sites})")
        x = self[obs_site]
        if like is not None and x.shape != like.shape:
            raise PairError(f"{call}: the simulated {obs_site!r} has shape {tuple(x.shape)}, "
                            f"but the data has shape {tuple(like.shape)}")
        return x


def simulate(model, data_like: torch.Tensor, *args, **kwargs) -> SimulatedSites:
    """Run ``model(data_like, ...)`` with its observation sites un-conditioned
    (``pyro.poutine.uncondition``): pyro_lvm's one simulator, which :func:`from_model`,
    :func:`pyro_lvm.diagnostics.bayes_loop`, :func:`pyro_lvm.diagnostics.sample_prior` and the
    built-in models' ``sample`` call (also importable as ``pyro_lvm.handlers.simulate``).

    ``data_like`` fixes only the shape of one simulated data set; its values are ignored.
    Returns a :class:`SimulatedSites`: the value of every sample site (latents and simulated
    observations) by name, and which sites are observed, read off the trace. The draws come
    from torch's global random state (seed it with :func:`pyro_lvm.rng.seeded`); gradients and
    nn.Module modes are as the caller set them.

    >>> import pyro, pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         z = pyro.sample("z", dist.Normal(0., 1.))
    ...         pyro.sample("x", dist.Normal(z, 1.), obs=x)
    >>> sim = simulate(model, torch.zeros(5))
    >>> sorted(sim), sim.observed, sim.data(like=torch.zeros(5)).shape
    (['x', 'z'], ('x',), torch.Size([5]))
    """
    trace = run_traced(poutine.uncondition(model), (data_like, *args), kwargs, "simulate",
                       "model")
    sites = dict(sample_sites(trace))
    observed = [name for name, site in sites.items() if site["infer"].get("was_observed")]
    factors = [name for name in observed if sites[name]["infer"].get("is_auxiliary")]
    return SimulatedSites({name: site["value"] for name, site in sites.items()}, observed,
                          factors)


class Simulated(NamedTuple):
    """What :func:`from_model` returns: the simulated observations and the latent values.

    >>> x, latents = Simulated(torch.zeros(2), {"z": torch.ones(2)})
    >>> x.shape, sorted(latents)
    (torch.Size([2]), ['z'])
    """

    x: torch.Tensor
    latents: dict[str, torch.Tensor]


def from_model(model: Callable, data_like, n: int | None = None, seed: int = 0,
               obs_site: str | None = None) -> Simulated:
    """Simulate a data set from ``model(x)``: observations and the latents that produced them.

    The model is run once with its observation sites un-conditioned (:func:`simulate`, the
    simulator :func:`pyro_lvm.diagnostics.bayes_loop` uses too); ``data_like`` only fixes the
    shape (and dtype) of the simulated data. With ``n``, the data set has ``n`` rows shaped
    like the rows of ``data_like`` instead. The draw is seeded by ``seed``
    (:func:`pyro_lvm.rng.seeded`), so torch's global random state is left as it was, and runs
    without gradients. Use this to check inference on data whose latents are known (the
    self-consistency "Bayes' loop"). The data is the model's one observed site (``obs=``;
    ``pyro.factor`` terms are not data), found from the trace.

    Args:
        model: a Pyro program ``model(x)`` that observes ``x`` with ``obs=x``.
        data_like: a tensor (or array) shaped like the data.
        n: number of datapoints to simulate (default ``len(data_like)``).
        seed: seed of the simulation.
        obs_site: name of the observation site, needed only when the model observes more than
            one site.

    Returns:
        ``Simulated(x, latents)``: the simulated observations (shape of ``data_like``, or
        ``(n, *data_like.shape[1:])``) and every other sample site's value by name.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(0., 1.))
        ...         pyro.sample("x", dist.Normal(z, 0.1).expand([x.shape[0]]), obs=x)
        >>> x, latents = from_model(model, torch.zeros(5), n=1000, seed=0)
        >>> x.shape, sorted(latents), float((x - latents["z"]).std()) < 0.15
        (torch.Size([1000]), ['z'], True)
    """
    if not callable(model):
        raise ValueError(f"model must be callable, got {model!r}")
    try:
        like = to_float_tensor(data_like, "data_like")
    except TypeError as e:
        raise ValueError(str(e)) from None
    if n is not None:
        n = check_positive_int(n, "n")
        like = torch.zeros((n, *like.shape[1:]), dtype=like.dtype, device=like.device)
    seed = _check_seed(seed)

    devices = [like.device.index or 0] if like.device.type == "cuda" else []
    with seeded(seed, devices=devices), torch.no_grad():
        sim = simulate(model, like)
    x = sim.data(like=like, obs_site=obs_site, call="from_model").detach()
    return Simulated(x, {k: v.detach() for k, v in sim.latents.items()})


class SparseDictionary(NamedTuple):
    """What :func:`sparse_dictionary` returns: the (patch_dim, num_features) unit-norm atoms,
    the (n, num_features) codes and the (n, patch_dim) noisy patches."""

    atoms: torch.Tensor
    codes: torch.Tensor
    x: torch.Tensor


def sparse_dictionary(n: int, patch_dim: int, num_features: int, active: int,
                      noise: float = 0.05, seed: int = 0) -> SparseDictionary:
    """Patches made of ``active`` atoms each of a random unit-norm dictionary (Gaussian
    amplitudes, a uniformly random support), plus N(0, noise^2) pixel noise: the setting of
    dictionary-recovery experiments (e.g. Aharon, Elad & Bruckstein 2006, K-SVD, section V).
    Score a learned dictionary with :func:`pyro_lvm.diagnostics.feature_recovery`.

    Example:
        >>> data = sparse_dictionary(100, patch_dim=16, num_features=24, active=3)
        >>> data.atoms.shape, data.x.shape, (data.codes != 0).sum(1).unique().tolist()
        (torch.Size([16, 24]), torch.Size([100, 16]), [3])
    """
    n = check_positive_int(n, "n")
    patch_dim = check_positive_int(patch_dim, "patch_dim")
    num_features = check_positive_int(num_features, "num_features")
    active = check_positive_int(active, "active")
    if active > num_features:
        raise ValueError(f"active must be at most num_features ({num_features}), got {active}")
    noise = check_positive_float(noise, "noise")
    g = generator(_check_seed(seed))
    atoms = torch.randn(patch_dim, num_features, generator=g)
    atoms = atoms / atoms.norm(dim=0)
    support = torch.rand(n, num_features, generator=g).argsort(dim=1) < active
    codes = torch.randn(n, num_features, generator=g) * support
    x = codes @ atoms.T + noise * torch.randn(n, patch_dim, generator=g)
    return SparseDictionary(atoms, codes, x)
