"""A VAE with two stochastic layers (Burda et al. 2016, section 5: latents [100, 50] with
deterministic hidden layers [[200, 200], [100, 100]] for MNIST), top-down model, bottom-up
guide:

    model:  z2 ~ N(0, I),  z1 | z2 ~ N(mu(z2), diag sigma(z2)^2),  x | z1 ~ p(x | f(z1))
    guide:  z1 | x ~ N(mu(x), diag sigma(x)^2),  z2 | z1 ~ N(mu(z1), diag sigma(z1)^2)
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .._checks import as_data_tensor, check_feature_dim, check_positive_float, check_positive_int
from ..handlers import simulate
from ..nn import gaussian_head, mlp, register_module
from .settings import Recorded, check_dtype
from .vae import LIKELIHOODS, likelihood_distribution, likelihood_mean


class TwoLayerVAE(Recorded, nn.Module):
    """Two stochastic layers, sizes configurable (defaults: Burda et al.'s MNIST setting).

    Example:
        >>> vae = TwoLayerVAE(64, latent_dims=(8, 4), hidden=((32,), (16,)))
        >>> vae.sample(3).shape
        torch.Size([3, 64])
    """

    def __init__(self, data_dim: int, latent_dims: Sequence[int] = (100, 50),
                 hidden: Sequence[Sequence[int]] = ((200, 200), (100, 100)),
                 likelihood: str = "bernoulli", beta: float = 1.0, activation: str = "tanh",
                 data_plate: str = "data", name: str = "two_layer_vae"):
        super().__init__()
        self.data_dim = check_positive_int(data_dim, "data_dim")
        if len(latent_dims) != 2 or len(hidden) != 2:
            raise ValueError(f"TwoLayerVAE needs two latent sizes and two hidden-layer lists, "
                             f"got latent_dims={latent_dims!r}, hidden={hidden!r}")
        d1, d2 = (check_positive_int(d, "latent size") for d in latent_dims)
        h1, h2 = ([check_positive_int(h, "hidden size") for h in hs] for hs in hidden)
        if likelihood not in LIKELIHOODS or likelihood == "gaussian_learned":
            raise ValueError(f"likelihood must be one of {LIKELIHOODS[:3]}, got {likelihood!r}")
        self.latent_dims, self.likelihood = (d1, d2), likelihood
        self.beta = check_positive_float(beta, "beta")
        self.data_plate, self.name = data_plate, name
        self._record(data_dim=self.data_dim, latent_dims=[d1, d2], hidden=[h1, h2],
                     likelihood=likelihood, beta=self.beta, activation=activation,
                     data_plate=data_plate, name=name)
        self.encoder1 = mlp([self.data_dim, *h1, 2 * d1], activation)   # q(z1 | x)
        self.encoder2 = mlp([d1, *h2, 2 * d2], activation)              # q(z2 | z1)
        self.decoder2 = mlp([d2, *reversed(h2), 2 * d1], activation)    # p(z1 | z2)
        self.decoder1 = mlp([d1, *reversed(h1), self.data_dim], activation)  # p(x | z1)

    def model(self, x: torch.Tensor) -> None:
        """Top-down: z2, then z1 | z2, then x | z1."""
        check_feature_dim(x, self.data_dim)
        check_dtype(x, next(self.decoder1.parameters()), "TwoLayerVAE.model")
        register_module(f"{self.name}.decoder", nn.ModuleList([self.decoder1, self.decoder2]))
        d2 = self.latent_dims[1]
        ref = next(self.decoder1.parameters())
        with pyro.plate(self.data_plate, x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(ref.new_zeros(d2), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(*gaussian_head(self.decoder2(z2))).to_event(1))
            pyro.sample("x", likelihood_distribution(self.likelihood, self.decoder1(z1),
                                                     self.beta), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """Bottom-up: z1 | x, then z2 | z1."""
        check_feature_dim(x, self.data_dim)
        check_dtype(x, next(self.encoder1.parameters()), "TwoLayerVAE.guide")
        register_module(f"{self.name}.encoder", nn.ModuleList([self.encoder1, self.encoder2]))
        with pyro.plate(self.data_plate, x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(*gaussian_head(self.encoder1(x))).to_event(1))
            pyro.sample("z2", dist.Normal(*gaussian_head(self.encoder2(z1))).to_event(1))

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """Ancestral samples: the mean of p(x | z1) if ``mean``, else draws of x.

        >>> TwoLayerVAE(8, (2, 2), ((4,), (4,))).sample(2, mean=False).shape
        torch.Size([2, 8])
        """
        num_samples = check_positive_int(num_samples, "num_samples")
        ref = next(self.decoder1.parameters())
        draws = simulate(self.model, ref.new_zeros(num_samples, self.data_dim))
        return likelihood_mean(self.likelihood, self.decoder1(draws["z1"])) if mean \
            else draws["x"]

    @torch.no_grad()
    def reconstruct(self, x) -> torch.Tensor:
        """The mean of p(x | z1 = E_q[z1 | x]).

        >>> TwoLayerVAE(8, (2, 2), ((4,), (4,))).reconstruct(torch.zeros(3, 8)).shape
        torch.Size([3, 8])
        """
        ref = next(self.decoder1.parameters())
        x = as_data_tensor(x, "x", dtype=ref.dtype).to(ref.device)
        check_feature_dim(x, self.data_dim)
        return likelihood_mean(self.likelihood, self.decoder1(gaussian_head(self.encoder1(x))[0]))
