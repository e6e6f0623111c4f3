"""Learned features (dictionary atoms, decoder columns) judged against a known truth or against
what natural-image features look like.

- :func:`feature_recovery`: how well a learned dictionary recovers a known one, up to the
  sign and permutation ambiguities of the linear model: the best one-to-one matching of
  atoms by |cosine| (the Hungarian algorithm), the standard score of dictionary-learning
  recovery experiments (e.g. Aharon, Elad & Bruckstein 2006, K-SVD, section V).
- :func:`localization` and :func:`orientation_selectivity`: two measurable properties of
  the features sparse coding learns on whitened natural images (Olshausen & Field 1996,
  Nature 381:607: "localized, oriented and bandpass"). Localization is the largest share of a
  feature's energy inside a small window; orientation selectivity is the concentration of
  its Fourier power around one orientation (the resultant length of the doubled angles,
  which is 1 for a plane wave or an edge and near 0 for isotropic noise).
- :func:`feature_shapes` calls a feature "localized" or "oriented" when the statistic
  exceeds its (1 - level) quantile over white-noise features of the same size: a calibrated
  null, so random features pass each test with probability ``level``. PCA components of
  natural images are oriented plane waves that are not localized; learned sparse-coding
  features are both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .._checks import check_positive_int, to_float_tensor
from ..rng import generator


@dataclass(frozen=True)
class FeatureRecovery:
    """Result of :func:`feature_recovery`.

    Attributes:
        cosine: (K_true,) |cosine| between each true atom and its matched learned atom.
        match: (K_true,) index of the learned atom matched to each true atom.
    """

    cosine: torch.Tensor
    match: torch.Tensor

    @property
    def worst(self) -> float:
        """The smallest matched |cosine| (every atom is recovered when this is near 1)."""
        return float(self.cosine.min())

    @property
    def mean(self) -> float:
        """The mean matched |cosine|."""
        return float(self.cosine.mean())


def _rows(features, name: str) -> torch.Tensor:
    feats = to_float_tensor(features, name).double()
    if feats.dim() != 2 or feats.shape[0] == 0:
        raise ValueError(f"{name} must be a (num_features, num_pixels) matrix, "
                         f"got shape {tuple(feats.shape)}")
    if not torch.isfinite(feats).all():
        raise ValueError(f"{name} contains NaN or inf")
    norms = feats.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has all-zero features (rows "
                         f"{torch.nonzero(norms[:, 0] == 0)[:, 0].tolist()})")
    return feats / norms


def feature_recovery(true_features, learned_features) -> FeatureRecovery:
    """Match each true atom to a distinct learned atom, maximizing the total |cosine|.

    Both arguments hold one feature per **row** (pass ``model.dictionary.T`` for a
    :class:`~pyro_lvm.models.SparseCoding`); there must be at least as many learned features
    as true ones.

    Example:
        >>> truth = torch.eye(3)
        >>> learned = torch.tensor([[0., -2., 0.], [0., 0., 1.], [1., 0.1, 0.]])
        >>> r = feature_recovery(truth, learned)
        >>> r.match.tolist(), round(r.worst, 3)
        ([2, 0, 1], 0.995)
    """
    true = _rows(true_features, "true_features")
    learned = _rows(learned_features, "learned_features")
    if true.shape[1] != learned.shape[1]:
        raise ValueError(f"true_features have {true.shape[1]} pixels, learned_features have "
                         f"{learned.shape[1]}")
    if learned.shape[0] < true.shape[0]:
        raise ValueError(f"need at least as many learned features as true ones, got "
                         f"{learned.shape[0]} < {true.shape[0]}")
    cosine = (true @ learned.T).abs()
    rows, cols = linear_sum_assignment(-cosine.numpy())
    order = np.argsort(rows)
    match = torch.as_tensor(cols[order])
    return FeatureRecovery(cosine[torch.arange(true.shape[0]), match].float(), match)


def _images(features, image_shape, name: str = "features") -> torch.Tensor:
    feats = _rows(features, name)
    h, w = (check_positive_int(s, "image_shape") for s in image_shape)
    if h * w != feats.shape[1]:
        raise ValueError(f"image_shape {tuple(image_shape)} has {h * w} pixels but the "
                         f"features have {feats.shape[1]}")
    return feats.reshape(-1, h, w)


def localization(features, image_shape, window: int | None = None) -> torch.Tensor:
    """Largest share of each feature's energy (sum of squares) inside a ``window`` x
    ``window`` square (default: half the smaller side, rounded up); between
    window^2 / num_pixels (energy spread evenly) and 1 (all of it in one window).

    Example:
        >>> blob = torch.zeros(8, 8); blob[2:4, 5:7] = 1.0
        >>> flat = torch.ones(8, 8)
        >>> localization(torch.stack([blob.flatten(), flat.flatten()]), (8, 8)).tolist()
        [1.0, 0.25]
    """
    images = _images(features, image_shape)
    size = math.ceil(min(images.shape[1:]) / 2) if window is None else window
    size = check_positive_int(size, "window")
    if size > min(images.shape[1:]):
        raise ValueError(f"window {size} is larger than the image {tuple(image_shape)}")
    energy = images.pow(2).unsqueeze(1)
    windows = F.avg_pool2d(energy, size, stride=1) * size * size
    return windows.flatten(1).max(dim=1).values.float()


def orientation_selectivity(features, image_shape, pad: int = 32) -> torch.Tensor:
    """|sum_f P(f) exp(2 i theta_f)| / sum_f P(f): how much of each feature's Fourier power
    P(f) (zero-padded to ``pad`` x ``pad``) lies along one orientation theta; 1 for an
    infinite plane wave (less for a small patch of one, whose borders spread its power), near 0
    for isotropic features. The DC term has no orientation
    and counts in the denominator only.

    Example:
        >>> rows, cols = torch.meshgrid(torch.arange(8.), torch.arange(8.), indexing="ij")
        >>> wave = torch.cos(2 * math.pi * cols / 4)          # vertical stripes
        >>> dot = torch.zeros(8, 8); dot[4, 4] = 1.0          # isotropic
        >>> s = orientation_selectivity(torch.stack([wave.flatten(), dot.flatten()]), (8, 8))
        >>> [round(v, 2) for v in s.tolist()]
        [0.84, 0.0]
    """
    images = _images(features, image_shape)
    pad = check_positive_int(pad, "pad")
    if pad < max(images.shape[1:]):
        raise ValueError(f"pad {pad} is smaller than the image {tuple(image_shape)}")
    power = torch.fft.fft2(images, s=(pad, pad)).abs().pow(2)
    freq = torch.fft.fftfreq(pad, dtype=torch.float64)
    fy, fx = torch.meshgrid(freq, freq, indexing="ij")
    doubled = torch.polar(((fx != 0) | (fy != 0)).double(), 2 * torch.atan2(fy, fx))
    return ((power * doubled).sum((1, 2)).abs() / power.sum((1, 2))).float()


@dataclass(frozen=True)
class FeatureShapes:
    """Result of :func:`feature_shapes`: per-feature statistics, the white-noise thresholds
    they are compared with, and the verdicts."""

    localization: torch.Tensor
    orientation: torch.Tensor
    localization_threshold: float
    orientation_threshold: float

    @property
    def localized(self) -> torch.Tensor:
        return self.localization > self.localization_threshold

    @property
    def oriented(self) -> torch.Tensor:
        return self.orientation > self.orientation_threshold

    @property
    def share(self) -> float:
        """Share of the features that are both localized and oriented."""
        return float((self.localized & self.oriented).float().mean())

    def __str__(self) -> str:
        return (f"localized and oriented: {self.share:.0%} of {len(self.localization)} "
                f"(localized {self.localized.float().mean():.0%}, oriented "
                f"{self.oriented.float().mean():.0%}; median localization "
                f"{self.localization.median():.3f} vs null "
                f"{self.localization_threshold:.3f}, median orientation "
                f"{self.orientation.median():.3f} vs null {self.orientation_threshold:.3f})")


def feature_shapes(features, image_shape, window: int | None = None, level: float = 0.01,
                   num_null: int = 4000, seed: int = 0) -> FeatureShapes:
    """Localization and orientation of each feature (one per row), each compared with its
    (1 - ``level``) quantile over ``num_null`` white-noise features (i.i.d. Gaussian pixels),
    so that a random feature is called localized (or oriented) with probability ``level``.

    Example:
        >>> rows, cols = torch.meshgrid(torch.arange(8.), torch.arange(8.), indexing="ij")
        >>> edge = torch.exp(-((rows - 3.5) ** 2 + (cols - 2) ** 2) / 4) * torch.sin(cols - 2)
        >>> wave = torch.cos(2 * math.pi * (rows + cols) / 4)
        >>> s = feature_shapes(torch.stack([edge.flatten(), wave.flatten()]), (8, 8))
        >>> s.localized.tolist(), s.oriented.tolist(), s.share
        ([True, False], [True, True], 0.5)
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    num_null = check_positive_int(num_null, "num_null")
    loc = localization(features, image_shape, window)
    ori = orientation_selectivity(features, image_shape)
    rng = generator(seed)
    null = torch.randn(num_null, math.prod(image_shape), generator=rng,
                       dtype=torch.float64)
    null_loc = localization(null, image_shape, window)
    null_ori = orientation_selectivity(null, image_shape)
    return FeatureShapes(loc, ori, float(torch.quantile(null_loc, 1 - level)),
                         float(torch.quantile(null_ori, 1 - level)))
