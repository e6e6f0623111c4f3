"""The linear-Gaussian toy of Rainforth et al. (2018, "Tighter variational bounds are not
necessarily better", section 4): a model where the optimum is known, for studying gradients.

Model:  z ~ N(mu, I_D),  x | z ~ N(z, I_D).   Marginal: x ~ N(mu, 2 I_D).
Guide:  q(z | x) = N(A x + b, (2/3) I_D).
Exact posterior: N((x + mu) / 2, I_D / 2), so the optimal guide mean has A = I/2, b = mu/2
(the guide's variance is fixed at 2/3, as in the paper, so it is never exact).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .._checks import check_positive_float, check_positive_int
from ..nn import register_module
from ..rng import generator
from .settings import Recorded, check_dtype


class GaussianToy(Recorded, nn.Module):
    """Rainforth et al.'s toy, with ``model(x)``, ``guide(x)`` and the known optimum.

    Example:
        >>> toy = GaussianToy(dim=20)
        >>> x = toy.simulate(1024, seed=0)
        >>> toy.set_near_optimum(x, noise=0.01, seed=1)
        >>> x.shape, toy.encoder_weight.shape
        (torch.Size([1024, 20]), torch.Size([20, 20]))
    """

    def __init__(self, dim: int = 20, name: str = "gaussian_toy"):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.name = name
        self._record(dim=self.dim, name=name)
        self.mu = nn.Parameter(torch.zeros(dim))
        self.encoder_weight = nn.Parameter(torch.zeros(dim, dim))
        self.encoder_bias = nn.Parameter(torch.zeros(dim))
        self._decoder = nn.ParameterList([self.mu])
        self._encoder = nn.ParameterList([self.encoder_weight, self.encoder_bias])

    def model(self, x: torch.Tensor) -> None:
        """z ~ N(mu, I), x ~ N(z, I), inside the data plate."""
        check_dtype(x, self.mu, "GaussianToy.model")
        register_module(f"{self.name}.model", self._decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.mu, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z|x) = N(A x + b, 2/3 I)."""
        check_dtype(x, self.encoder_weight, "GaussianToy.guide")
        register_module(f"{self.name}.guide", self._encoder)
        loc = x @ self.encoder_weight.T + self.encoder_bias
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, math.sqrt(2.0 / 3.0)).to_event(1))

    @torch.no_grad()
    def simulate(self, num_data: int, seed: int = 0) -> torch.Tensor:
        """Data from the model with mu ~ N(0, I) drawn once (the paper's setting).

        >>> GaussianToy(3).simulate(5).shape
        torch.Size([5, 3])
        """
        g = generator(seed)
        true_mu = torch.randn(self.dim, generator=g)
        z = true_mu + torch.randn(check_positive_int(num_data, "num_data"), self.dim,
                                  generator=g)
        return z + torch.randn(z.shape, generator=g)

    @torch.no_grad()
    def set_near_optimum(self, x: torch.Tensor, noise: float = 0.01, seed: int = 0) -> None:
        """mu = mean(x) (maximum likelihood), A = I/2, b = mu/2, each perturbed by
        N(0, noise^2) (Rainforth et al. 2018 evaluate gradients there)."""
        noise = check_positive_float(noise, "noise")
        g = generator(seed)

        def jitter(t):
            return t + noise * torch.randn(t.shape, generator=g)

        mu = x.mean(0)
        self.mu.copy_(jitter(mu))
        self.encoder_weight.copy_(jitter(0.5 * torch.eye(self.dim)))
        self.encoder_bias.copy_(jitter(0.5 * mu))
