"""Variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014) with MLP encoder/decoder.

Model:  z ~ N(0, I),  x | z ~ Bernoulli(sigmoid(f_theta(z))).
Guide:  q(z|x) = N(mu_phi(x), diag sigma_phi(x)^2).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import as_data_tensor, check_feature_dim, check_positive_int
from ..handlers import simulate
from ..nn import mlp, register_module

LIKELIHOODS = ("bernoulli",)


class VAE(nn.Module):
    """A VAE with a diagonal-Normal encoder and a Bernoulli decoder.

    ``model(x)`` samples ``"z"`` and observes ``"x"`` inside ``pyro.plate("data", len(x))``;
    ``guide(x)`` is the amortized encoder. Data must lie in [0, 1] (binarized images).

    Example:
        >>> vae = VAE(data_dim=64, latent_dim=4, hidden=(32,))
        >>> vae.sample(3).shape
        torch.Size([3, 64])
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (200,),
                 likelihood: str = "bernoulli", activation: str = "tanh",
                 data_plate: str = "data", name: str = "vae"):
        super().__init__()
        self.data_dim = check_positive_int(data_dim, "data_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        hidden = [check_positive_int(h, "hidden size") for h in hidden]
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.likelihood, self.data_plate, self.name = likelihood, data_plate, name
        self.encoder = mlp([self.data_dim, *hidden, 2 * self.latent_dim], activation)
        self.decoder = mlp([self.latent_dim, *reversed(hidden), self.data_dim], activation)

    def _prior(self) -> dist.Distribution:
        p = next(self.decoder.parameters())
        return dist.Normal(p.new_zeros(self.latent_dim), 1.0).to_event(1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Location and scale of q(z|x).

        >>> loc, scale = VAE(8, 2, hidden=(4,)).encode(torch.zeros(5, 8))
        >>> loc.shape, bool((scale > 0).all())
        (torch.Size([5, 2]), True)
        """
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-4

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of p(x|z).

        >>> VAE(8, 2, hidden=(4,)).decode(torch.zeros(5, 2)).shape
        torch.Size([5, 8])
        """
        return self.decoder(z)

    def model(self, x: torch.Tensor) -> None:
        """z ~ N(0, I), x ~ Bernoulli(logits=decoder(z)), inside the data plate."""
        check_feature_dim(x, self.data_dim)
        register_module(f"{self.name}.decoder", self.decoder)
        with pyro.plate(self.data_plate, x.shape[0]):
            z = pyro.sample("z", self._prior())
            pyro.sample("x", dist.Bernoulli(logits=self.decode(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z|x) = N(mu(x), diag sigma(x)^2), inside the data plate."""
        check_feature_dim(x, self.data_dim)
        register_module(f"{self.name}.encoder", self.encoder)
        loc, scale = self.encode(x)
        with pyro.plate(self.data_plate, x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Decode draws z ~ p(z): pixel probabilities if ``mean`` else binary draws of x.

        >>> VAE(8, 2, hidden=(4,)).sample(5, mean=False).shape
        torch.Size([5, 8])
        """
        num_samples = check_positive_int(num_samples, "num_samples")
        p = next(self.decoder.parameters())
        draws = simulate(self.model, p.new_zeros(num_samples, self.data_dim))
        return torch.sigmoid(self.decode(draws["z"])) if mean else draws["x"]

    @torch.no_grad()
    def reconstruct(self, x) -> torch.Tensor:
        """Pixel probabilities of p(x | z = E_q[z|x]).

        >>> VAE(8, 2, hidden=(4,)).reconstruct(torch.zeros(5, 8)).shape
        torch.Size([5, 8])
        """
        p = next(self.decoder.parameters())
        x = as_data_tensor(x, "x", dtype=p.dtype).to(p.device)
        check_feature_dim(x, self.data_dim)
        return torch.sigmoid(self.decode(self.encode(x)[0]))
