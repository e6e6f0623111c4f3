"""Probabilistic PCA (Tipping & Bishop 1999): the model where everything is known in closed form.

Model:  z ~ N(0, I_d),  x | z ~ N(mu + W z, sigma^2 I_D).
Marginal (T&B eq. 4-6):  x ~ N(mu, C),  C = W W^T + sigma^2 I.
Posterior (T&B eq. 7):   z | x ~ N(M^-1 W^T (x - mu), sigma^2 M^-1),  M = W^T W + sigma^2 I.
ML solution (T&B eq. 7-8): W = U_d (L_d - sigma^2 I)^1/2,  sigma^2 = mean of the D - d
discarded eigenvalues of the sample covariance S (normalised by 1/N).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import as_data_tensor, check_feature_dim, check_positive_int
from ..handlers import simulate
from ..nn import inverse_softplus, register_module
from .settings import Recorded, check_dtype


class _PPCADecoder(nn.Module):
    def __init__(self, data_dim: int, latent_dim: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(data_dim))
        self.weight = nn.Parameter(0.1 * torch.randn(data_dim, latent_dim))
        self.log_noise_variance = nn.Parameter(torch.zeros(()))


class _LinearGaussianEncoder(nn.Module):
    """q(z|x) = N(A (x - b), L L^T) with a full, data-independent covariance: the family
    that contains the exact PPCA posterior."""

    def __init__(self, data_dim: int, latent_dim: int):
        super().__init__()
        self.weight = nn.Parameter(0.1 * torch.randn(latent_dim, data_dim))
        self.bias = nn.Parameter(torch.zeros(data_dim))
        self.raw_scale_tril = nn.Parameter(torch.zeros(latent_dim, latent_dim))

    def scale_tril(self) -> torch.Tensor:
        raw = self.raw_scale_tril
        return raw.tril(-1) + torch.diag_embed(F.softplus(raw.diagonal()) + 1e-5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x - self.bias) @ self.weight.T, self.scale_tril()


class PPCA(Recorded, nn.Module):
    """Probabilistic PCA with an amortized guide, its exact posterior and its ML solution.

    ``model(x)`` and ``guide(x)`` follow the pyro_lvm contract: one latent site ``"z"`` and
    one observation site ``"x"`` inside ``pyro.plate("data", len(x))``. ``guide`` is a linear
    Gaussian encoder whose family contains the exact posterior, so maximizing the ELBO
    reaches the maximum-likelihood solution; ``exact_posterior`` is the true p(z|x).
    The data must have the parameters' dtype (``PPCA(...).double()`` for float64 data);
    ``config`` holds the constructor's settings (``PPCA(**ppca.config)``).

    Example:
        >>> torch.manual_seed(0) and None
        >>> ppca = PPCA(data_dim=5, latent_dim=2)
        >>> x = ppca.sample(1000)
        >>> fitted = PPCA(5, 2).fit_closed_form(x)
        >>> bool(fitted.log_likelihood(x).mean() >= ppca.log_likelihood(x).mean())
        True
    """

    def __init__(self, data_dim: int, latent_dim: int, data_plate: str = "data",
                 name: str = "ppca"):
        super().__init__()
        data_dim = check_positive_int(data_dim, "data_dim")
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        if latent_dim >= data_dim:
            raise ValueError(
                f"PPCA needs latent_dim < data_dim, got latent_dim={latent_dim}, "
                f"data_dim={data_dim}"
            )
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.data_plate, self.name = data_plate, name
        self._record(data_dim=data_dim, latent_dim=latent_dim, data_plate=data_plate, name=name)
        self.decoder = _PPCADecoder(data_dim, latent_dim)
        self.encoder = _LinearGaussianEncoder(data_dim, latent_dim)

    # -- parameters -------------------------------------------------------------------------
    @property
    def loc(self) -> torch.Tensor:
        """mu, the data mean (D,)."""
        return self.decoder.loc

    @property
    def weight(self) -> torch.Tensor:
        """W, the (D, d) loading matrix."""
        return self.decoder.weight

    @property
    def noise_variance(self) -> torch.Tensor:
        """sigma^2, the isotropic observation noise variance."""
        return self.decoder.log_noise_variance.exp()

    @torch.no_grad()
    def set_parameters(self, loc, weight, noise_variance) -> PPCA:
        """Set mu, W and sigma^2 (for instance from ``sklearn.decomposition.PCA``).

        >>> m = PPCA(3, 1).set_parameters(torch.zeros(3), torch.ones(3, 1), 0.5)
        >>> round(float(m.noise_variance.detach()), 6)
        0.5
        """
        d = self.decoder
        loc, weight = torch.as_tensor(loc, dtype=d.loc.dtype), torch.as_tensor(weight,
                                                                                dtype=d.loc.dtype)
        if loc.shape != d.loc.shape or weight.shape != d.weight.shape:
            raise ValueError(
                f"expected loc of shape {tuple(d.loc.shape)} and weight of shape "
                f"{tuple(d.weight.shape)}, got {tuple(loc.shape)} and {tuple(weight.shape)}"
            )
        noise_variance = torch.as_tensor(noise_variance, dtype=d.loc.dtype)
        if not torch.isfinite(noise_variance) or noise_variance <= 0:
            raise ValueError(f"noise_variance must be positive, got {float(noise_variance)}")
        d.loc.copy_(loc)
        d.weight.copy_(weight)
        d.log_noise_variance.copy_(noise_variance.log())
        return self

    def _check(self, x, name: str = "x") -> torch.Tensor:
        x = as_data_tensor(x, name, dtype=self.loc.dtype)
        check_feature_dim(x, self.data_dim, name)
        return x.to(self.loc.device)

    # -- Pyro programs ----------------------------------------------------------------------
    def model(self, x: torch.Tensor) -> None:
        """z ~ N(0, I), x ~ N(mu + W z, sigma^2 I), inside the data plate."""
        check_feature_dim(x, self.data_dim)
        check_dtype(x, self.loc, "PPCA.model")
        register_module(f"{self.name}.decoder", self.decoder)
        zeros = self.loc.new_zeros(self.latent_dim)
        with pyro.plate(self.data_plate, x.shape[0]):
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            mean = self.loc + z @ self.weight.T
            pyro.sample("x", dist.Normal(mean, self.noise_variance.sqrt()).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """Amortized linear Gaussian guide q(z|x) = N(A (x - b), L L^T)."""
        check_feature_dim(x, self.data_dim)
        check_dtype(x, self.encoder.weight, "PPCA.guide")
        register_module(f"{self.name}.encoder", self.encoder)
        loc, scale_tril = self.encoder(x)
        with pyro.plate(self.data_plate, x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=scale_tril))

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """The exact posterior p(z|x) (Tipping & Bishop 1999, eq. 7), batched over rows of x.

        >>> PPCA(4, 2).posterior(torch.zeros(3, 4)).batch_shape
        torch.Size([3])
        """
        w, s2 = self.weight, self.noise_variance
        eye = torch.eye(self.latent_dim, dtype=w.dtype, device=w.device)
        m_chol = torch.linalg.cholesky(w.T @ w + s2 * eye)
        mean = torch.cholesky_solve(w.T @ (x - self.loc).T, m_chol).T
        cov = s2 * torch.cholesky_inverse(m_chol)
        return dist.MultivariateNormal(mean, scale_tril=torch.linalg.cholesky(cov))

    def exact_posterior(self, x: torch.Tensor) -> None:
        """A guide whose q(z|x) is the exact posterior: with it, ELBO = IWAE = log p(x)."""
        check_feature_dim(x, self.data_dim)
        check_dtype(x, self.loc, "PPCA.exact_posterior")
        register_module(f"{self.name}.decoder", self.decoder)
        with pyro.plate(self.data_plate, x.shape[0]):
            pyro.sample("z", self.posterior(x))

    # -- closed forms -----------------------------------------------------------------------
    def marginal(self) -> dist.LowRankMultivariateNormal:
        """p(x) = N(mu, W W^T + sigma^2 I) (Tipping & Bishop 1999, eq. 6).

        >>> PPCA(4, 2).marginal().event_shape
        torch.Size([4])
        """
        cov_diag = self.noise_variance.expand(self.data_dim)
        return dist.LowRankMultivariateNormal(self.loc, self.weight, cov_diag)

    def log_likelihood(self, x) -> torch.Tensor:
        """Exact per-datapoint log p(x), a tensor of shape (N,).

        >>> PPCA(4, 2).log_likelihood(torch.zeros(3, 4)).shape
        torch.Size([3])
        """
        return self.marginal().log_prob(self._check(x))

    @torch.no_grad()
    def fit_closed_form(self, x) -> PPCA:
        """Set mu, W, sigma^2 to the maximum-likelihood solution (Tipping & Bishop 1999, eq. 7-8),
        and the amortized guide to the exact posterior at that solution. Returns self.

        The sample covariance is normalised by 1/N (the ML estimate); scikit-learn's PCA uses
        1/(N-1), so its log-likelihood is slightly lower than this maximum.
        """
        x = self._check(x)
        xd = x.double()
        mean = xd.mean(0)
        centered = xd - mean
        cov = centered.T @ centered / x.shape[0]
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0), evecs.flip(1)
        d = self.latent_dim
        noise_variance = evals[d:].mean()
        if not noise_variance > 1e-12 * evals[0].clamp_min(1e-300):
            raise ValueError(
                f"the sample covariance of x has rank {int((evals > 1e-12 * evals[0]).sum())}"
                f" <= latent_dim={d}: the ML noise variance is zero and log p(x) is unbounded"
            )
        top = (evals[:d] - noise_variance).clamp_min(0.0)
        weight = evecs[:, :d] * top.sqrt()
        self.set_parameters(mean, weight, noise_variance)
        self.set_guide_to_posterior()
        return self

    @torch.no_grad()
    def set_guide_to_posterior(self) -> PPCA:
        """Set the amortized guide's parameters so that q(z|x) is the current exact posterior.

        >>> m = PPCA(4, 2).set_guide_to_posterior()
        """
        w, s2 = self.weight, self.noise_variance
        eye = torch.eye(self.latent_dim, dtype=w.dtype, device=w.device)
        m_inv = torch.linalg.inv(w.T @ w + s2 * eye)
        scale_tril = torch.linalg.cholesky(s2 * m_inv)
        raw = scale_tril.tril(-1).clone()
        diag = (scale_tril.diagonal() - 1e-5).clamp_min(1e-12)
        raw.diagonal().copy_(inverse_softplus(diag))
        enc = self.encoder
        enc.weight.copy_(m_inv @ w.T)
        enc.bias.copy_(self.loc)
        enc.raw_scale_tril.copy_(raw)
        return self

    # -- conveniences -----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """Draw ``num_samples`` data points by running the model un-conditioned.

        >>> PPCA(4, 2).sample(10).shape
        torch.Size([10, 4])
        """
        num_samples = check_positive_int(num_samples, "num_samples")
        return simulate(self.model, self.loc.new_zeros(num_samples, self.data_dim))["x"]

    @torch.no_grad()
    def reconstruct(self, x) -> torch.Tensor:
        """mu + W E[z|x]: the mean of p(x|z) at the exact posterior mean.

        >>> PPCA(4, 2).reconstruct(torch.zeros(3, 4)).shape
        torch.Size([3, 4])
        """
        return self.loc + self.posterior(self._check(x)).mean @ self.weight.T
