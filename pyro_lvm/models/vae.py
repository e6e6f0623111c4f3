"""Variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014) with MLP encoder and
decoder, a choice of likelihoods, a pluggable prior and a KL weight.

Model:  z ~ r(z) (default N(0, I)),  x | z ~ p(x | f_theta(z)).
Guide:  q(z | x) = N(mu_phi(x), diag sigma_phi(x)^2).

Likelihoods: "bernoulli" (binary data); "continuous_bernoulli" (data in [0, 1], Loaiza-Ganem
& Cunningham 2019); "gaussian": N(f(z), I / beta) with a *fixed precision* beta — the texts'
beta, which sets how much of the data's variation must be explained by z; "gaussian_learned":
N(f(z), diag sigma^2) with sigma learned. Separately, ``kl_weight`` is the classic beta-VAE
weight (Higgins et al. 2017): the latent sites of model and guide are scaled with
``poutine.scale``, so the ELBO becomes E log p(x|z) - kl_weight * KL(q(z|x) || r(z)); no
density is edited.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import as_data_tensor, check_feature_dim, check_positive_float, check_positive_int
from ..distributions import IndependentBernoulli
from ..handlers import simulate
from ..nn import gaussian_head, mlp, register_module
from .priors import Prior, VampPrior, make_prior
from .settings import Recorded, check_dtype

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian", "gaussian_learned")


def likelihood_distribution(kind: str, out: torch.Tensor, beta: float = 1.0,
                            raw_noise_scale: torch.Tensor | None = None) -> dist.Distribution:
    """p(x | z) of the given kind from the decoder's output, event shape (data_dim,).

    >>> likelihood_distribution("gaussian", torch.zeros(2, 3), beta=4.0).base_dist.scale[0, 0]
    tensor(0.5000)
    """
    if kind == "bernoulli":  # summed before negated: the same numbers, less memory traffic
        return IndependentBernoulli(out)
    if kind == "continuous_bernoulli":
        fn = dist.ContinuousBernoulli(logits=out)
    elif kind == "gaussian":
        fn = dist.Normal(out, torch.tensor(1.0 / math.sqrt(beta), dtype=out.dtype))
    elif kind == "gaussian_learned":
        fn = dist.Normal(out, F.softplus(raw_noise_scale) + 1e-4)
    else:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {kind!r}")
    return fn.to_event(1)


def likelihood_mean(kind: str, out: torch.Tensor) -> torch.Tensor:
    """E[x | z] for the decoder's output ``out``.

    >>> likelihood_mean("bernoulli", torch.zeros(1, 2))
    tensor([[0.5000, 0.5000]])
    """
    if kind == "bernoulli":
        return torch.sigmoid(out)
    if kind == "continuous_bernoulli":
        return dist.ContinuousBernoulli(logits=out).mean
    return out


class VAE(Recorded, nn.Module):
    """A VAE with a diagonal-Normal encoder, an MLP decoder and a pluggable prior.

    ``model(x)`` samples ``"z"`` and observes ``"x"`` inside ``pyro.plate("data", len(x))``;
    ``guide(x)`` is the amortized encoder.

    Args:
        likelihood: one of "bernoulli", "continuous_bernoulli", "gaussian" (fixed precision
            ``beta``), "gaussian_learned".
        beta: the Gaussian likelihood's precision (1 / noise variance).
        kl_weight: multiplies the KL term (beta-VAE), through poutine.scale on "z".
        prior: None / "normal", "mixture", "flow", "gennorm", "vamp", a spec
            ``{"name": ..., **settings}`` (:attr:`~pyro_lvm.models.priors.Prior.spec`; a
            VampPrior on this VAE's encoder: ``{"name": "vamp", "num_components": K}``), or
            a :class:`~pyro_lvm.models.priors.Prior`.

    ``config`` holds the constructor's settings, the prior as its spec (``VAE(**vae.config)``
    builds the same VAE, untrained); the data must have the parameters' dtype.

    Example:
        >>> vae = VAE(data_dim=64, latent_dim=4, hidden=(32,), likelihood="gaussian", beta=10.)
        >>> vae.sample(3).shape
        torch.Size([3, 64])
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (200,),
                 likelihood: str = "bernoulli", beta: float = 1.0, kl_weight: float = 1.0,
                 prior=None, activation: str = "tanh", data_plate: str = "data",
                 name: str = "vae"):
        super().__init__()
        self.data_dim = check_positive_int(data_dim, "data_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        hidden = [check_positive_int(h, "hidden size") for h in hidden]
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.likelihood, self.data_plate, self.name = likelihood, data_plate, name
        self.beta = check_positive_float(beta, "beta")
        self.kl_weight = check_positive_float(kl_weight, "kl_weight")
        self.encoder = mlp([self.data_dim, *hidden, 2 * self.latent_dim], activation)
        self.decoder = mlp([self.latent_dim, *reversed(hidden), self.data_dim], activation)
        if likelihood == "gaussian_learned":
            self.raw_noise_scale = nn.Parameter(torch.zeros(self.data_dim))
        external_vamp = isinstance(prior, VampPrior)
        if prior == "vamp" or isinstance(prior, dict) and prior.get("name") == "vamp":
            settings = {k: v for k, v in prior.items() if k != "name"} if isinstance(
                prior, dict) else {}
            prior = VampPrior(self.latent_dim, self.encode, self.data_dim, **settings)
        self.prior = make_prior(prior, self.latent_dim)
        try:
            if external_vamp:
                raise ValueError("its VampPrior was built on another encoder (pass "
                                 "prior={'name': 'vamp', ...} for one on this VAE's encoder)")
            spec = self.prior.spec
        except ValueError as e:
            self._unrecorded = str(e)
        else:
            self._record(data_dim=self.data_dim, latent_dim=self.latent_dim, hidden=hidden,
                         likelihood=likelihood, beta=self.beta, kl_weight=self.kl_weight,
                         prior=spec, activation=activation, data_plate=data_plate, name=name)

    def _generative_modules(self) -> nn.ModuleList:
        parts = [self.decoder, self.prior]
        if isinstance(self.prior, VampPrior):  # the prior reads the encoder: shared params
            parts.append(self.encoder)
        if self.likelihood == "gaussian_learned":
            parts.append(nn.ParameterList([self.raw_noise_scale]))
        return nn.ModuleList(parts)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(z|x).

        >>> loc, scale = VAE(8, 2, hidden=(4,)).encode(torch.zeros(5, 8))
        >>> loc.shape, bool((scale > 0).all())
        (torch.Size([5, 2]), True)
        """
        return gaussian_head(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output: logits (Bernoulli kinds) or the mean (Gaussian kinds).

        >>> VAE(8, 2, hidden=(4,)).decode(torch.zeros(5, 2)).shape
        torch.Size([5, 8])
        """
        return self.decoder(z)

    def likelihood_dist(self, z: torch.Tensor) -> dist.Distribution:
        """p(x | z) as a distribution with event shape (data_dim,).

        >>> VAE(8, 2, hidden=(4,), likelihood="gaussian").likelihood_dist(
        ...     torch.zeros(5, 2)).event_shape
        torch.Size([8])
        """
        noise = getattr(self, "raw_noise_scale", None)
        return likelihood_distribution(self.likelihood, self.decode(z), self.beta, noise)

    def model(self, x: torch.Tensor) -> None:
        """z ~ r(z), x ~ p(x | z), inside the data plate; the z site scaled by kl_weight."""
        check_feature_dim(x, self.data_dim)
        check_dtype(x, next(self.decoder.parameters()), "VAE.model")
        register_module(f"{self.name}.generative", self._generative_modules())
        with pyro.plate(self.data_plate, x.shape[0]):
            with poutine.scale(scale=self.kl_weight):
                z = pyro.sample("z", self.prior.distribution())
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z|x) = N(mu(x), diag sigma(x)^2), inside the data plate (scaled by kl_weight)."""
        check_feature_dim(x, self.data_dim)
        check_dtype(x, next(self.encoder.parameters()), "VAE.guide")
        register_module(f"{self.name}.encoder", self.encoder)
        loc, scale = self.encode(x)
        with pyro.plate(self.data_plate, x.shape[0]), poutine.scale(scale=self.kl_weight):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def _mean(self, z: torch.Tensor) -> torch.Tensor:
        return likelihood_mean(self.likelihood, self.decode(z))

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Decode draws z ~ r(z): the mean of p(x|z) if ``mean``, else draws of x.

        >>> VAE(8, 2, hidden=(4,)).sample(5, mean=False).shape
        torch.Size([5, 8])
        """
        num_samples = check_positive_int(num_samples, "num_samples")
        p = next(self.decoder.parameters())
        draws = simulate(self.model, p.new_zeros(num_samples, self.data_dim))
        return self._mean(draws["z"]) if mean else draws["x"]

    @torch.no_grad()
    def reconstruct(self, x) -> torch.Tensor:
        """The mean of p(x | z = E_q[z|x]).

        >>> VAE(8, 2, hidden=(4,)).reconstruct(torch.zeros(5, 8)).shape
        torch.Size([5, 8])
        """
        p = next(self.decoder.parameters())
        x = as_data_tensor(x, "x", dtype=p.dtype).to(p.device)
        check_feature_dim(x, self.data_dim)
        return self._mean(self.encode(x)[0])


__all__ = ["VAE", "LIKELIHOODS", "Prior"]
