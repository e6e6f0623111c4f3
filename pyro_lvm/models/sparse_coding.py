"""Sparse coding (Olshausen & Field 1996): an image patch I is a sparse combination of
features, I = A x + noise, with a sparse (generalized normal, alpha <= 1) prior on x.

The scale ambiguity between A and x (A c, x / c fit equally well) is resolved by giving A
unit-norm columns: the model uses A = W / ||W||_columns. Overcomplete dictionaries
(num_features > patch_dim) are allowed; the noise scale is fixed or learned.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_feature_dim, check_positive_float, check_positive_int
from ..distributions import GeneralizedNormal
from ..handlers import simulate
from ..nn import inverse_softplus, register_module
from .settings import Recorded, check_dtype


class SparseCoding(Recorded, nn.Module):
    """I = A x + N(0, noise_scale^2 I), x_k ~ GeneralizedNormal(0, 1, alpha) i.i.d.

    Args:
        patch_dim: pixels per patch (D).
        num_features: dictionary size (K; may exceed D: overcomplete).
        alpha: sparsity of the prior (1: Laplace; below 1: sparser).
        noise_scale: a positive number (fixed), or "learned".

    Guides: any guide of :mod:`pyro_lvm.guides` (amortized, per-datapoint), or
    :meth:`map_guide_for` (a Delta per datapoint: MAP inference of the codes). Olshausen &
    Field's MAP learning is ``fit(sc.model, sc.map_guide_for(N), images, batch_size=N)``
    with the default Trace_ELBO (the log joint, for a Delta guide). The prior's scale is 1,
    so ``noise_scale`` sets the sparsity: for alpha = 1 the MAP codes minimize
    ||I - A x||^2 / 2 + noise_scale^2 ||x||_1 (tests/test_sparse_coding.py,
    benchmarks/sparse_coding.py).

    Example:
        >>> sc = SparseCoding(patch_dim=16, num_features=24, alpha=0.8)
        >>> sc.sample(5).shape, sc.dictionary.norm(dim=0).round(decimals=4).unique().tolist()
        (torch.Size([5, 16]), [1.0])
    """

    def __init__(self, patch_dim: int, num_features: int, alpha: float = 1.0,
                 noise_scale: float | str = 0.1, data_plate: str = "data",
                 name: str = "sparse_coding"):
        super().__init__()
        self.patch_dim = check_positive_int(patch_dim, "patch_dim")
        self.num_features = check_positive_int(num_features, "num_features")
        self.alpha = check_positive_float(alpha, "alpha")
        self.weight = nn.Parameter(torch.randn(self.patch_dim, self.num_features))
        if noise_scale == "learned":
            self.raw_noise_scale = nn.Parameter(torch.tensor(inverse_softplus(0.1)))
            self.fixed_noise_scale = None
        else:
            self.fixed_noise_scale = check_positive_float(noise_scale, "noise_scale")
        self.data_plate, self.name = data_plate, name
        self._record(patch_dim=self.patch_dim, num_features=self.num_features,
                     alpha=self.alpha, noise_scale=("learned" if self.fixed_noise_scale is None
                                                    else self.fixed_noise_scale),
                     data_plate=data_plate, name=name)

    @property
    def dictionary(self) -> torch.Tensor:
        """A, the (patch_dim, num_features) dictionary with unit-norm columns."""
        return self.weight / self.weight.norm(dim=0, keepdim=True).clamp_min(1e-12)

    @property
    def noise_scale(self) -> torch.Tensor:
        """The observation noise's standard deviation."""
        if self.fixed_noise_scale is not None:
            return self.weight.new_tensor(self.fixed_noise_scale)
        return F.softplus(self.raw_noise_scale) + 1e-5

    def prior(self) -> dist.Distribution:
        """The sparse prior over one code vector x."""
        zeros = self.weight.new_zeros(self.num_features)
        return GeneralizedNormal(zeros, 1.0, self.alpha).to_event(1)

    def model(self, images: torch.Tensor) -> None:
        """x ~ GeneralizedNormal(0, 1, alpha), I ~ N(A x, noise^2 I), inside the data plate."""
        check_feature_dim(images, self.patch_dim, "images")
        check_dtype(images, self.weight, "SparseCoding.model", "images")
        register_module(self.name, self)
        with pyro.plate(self.data_plate, images.shape[0]):
            x = pyro.sample("x", self.prior())
            pyro.sample("I", dist.Normal(x @ self.dictionary.T, self.noise_scale).to_event(1),
                        obs=images)

    def map_guide_for(self, num_data: int):
        """A MAP guide: a learnable code (Delta) per training patch, indexed by the plate.

        >>> sc = SparseCoding(4, 6)
        >>> guide = sc.map_guide_for(10)
        >>> pyro.poutine.trace(guide).get_trace(torch.zeros(10, 4)).nodes["x"]["value"].shape
        torch.Size([10, 6])
        """
        return _MAPCodes(self, check_positive_int(num_data, "num_data"))

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """Simulated patches (the model run un-conditioned)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        return simulate(self.model, self.weight.new_zeros(num_samples, self.patch_dim))["I"]


class _MAPCodes(nn.Module):
    def __init__(self, model: SparseCoding, num_data: int):
        super().__init__()
        self.owner_name = model.name
        self.plate = model.data_plate
        # away from 0, where |x|^alpha has an infinite slope for alpha < 1
        self.codes = nn.Parameter(0.1 * torch.randn(num_data, model.num_features))

    def forward(self, images: torch.Tensor) -> None:
        register_module(f"{self.owner_name}.map_codes", self)
        with pyro.plate(self.plate, images.shape[0]) as idx:
            pyro.sample("x", dist.Delta(self.codes[idx]).to_event(1))
