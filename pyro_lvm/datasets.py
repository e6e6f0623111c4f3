"""Built-in data sets that need no download.

Every loader returns a :class:`Dataset`: train / validation / test tensors with one flattened
datapoint per row, their labels, and the shape to reshape a row into an image.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["BINARIZATIONS", "DATASETS", "Dataset", "digits", "split_indices", "static_binarize"]

BINARIZATIONS = (None, "static")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into train, validation and test parts.

    Attributes:
        train, val, test: float tensors of shape (N_part, prod(image_shape)).
        train_labels, val_labels, test_labels: int64 tensors of shape (N_part,).
        image_shape: shape of one datapoint seen as an image, e.g. ``(8, 8)``.
        name: a short description (which data, which binarization).

    Example:
        >>> ds = Dataset(torch.zeros(3, 4), torch.zeros(1, 4), torch.zeros(1, 4),
        ...              torch.zeros(3, dtype=torch.long), torch.zeros(1, dtype=torch.long),
        ...              torch.zeros(1, dtype=torch.long), image_shape=(2, 2), name="toy")
        >>> ds.data_dim, ds.sizes
        (4, {'train': 3, 'val': 1, 'test': 1})
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    val_labels: torch.Tensor
    test_labels: torch.Tensor
    image_shape: tuple[int, ...]
    name: str = ""

    @property
    def data_dim(self) -> int:
        """Number of features per datapoint (pixels per image).

        >>> digits().data_dim
        64
        """
        return int(self.train.shape[-1])

    @property
    def sizes(self) -> dict[str, int]:
        """Number of datapoints in each part.

        >>> digits().sizes
        {'train': 1438, 'val': 180, 'test': 179}
        """
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _check_split(split) -> tuple[float, float, float]:
    if isinstance(split, str | bytes) or not isinstance(split, Sequence) or len(split) != 3:
        raise ValueError(
            f"split must be three fractions (train, val, test), got {split!r}"
        )
    for part, frac in zip(("train", "val", "test"), split, strict=True):
        if (isinstance(frac, bool) or not isinstance(frac, numbers.Real)
                or not np.isfinite(frac) or frac <= 0):
            raise ValueError(
                f"split fractions must be positive numbers, got {part} fraction {frac!r} "
                f"in split={tuple(split)!r}"
            )
    if not np.isclose(sum(split), 1.0, rtol=0.0, atol=1e-6):
        raise ValueError(f"split fractions must sum to 1, got split={tuple(split)!r} "
                         f"(sum {sum(split):g})")
    return tuple(float(f) for f in split)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def split_indices(num_data: int, split=(0.8, 0.1, 0.1), seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random partition of ``range(num_data)`` into train / val / test indices.

    The part sizes are ``round(frac * num_data)`` for train and val, the rest for test; every
    part gets at least one datapoint. The same ``seed`` always gives the same partition.

    >>> tr, va, te = split_indices(10, (0.6, 0.2, 0.2), seed=1)
    >>> len(tr), len(va), len(te), sorted([*tr, *va, *te]) == list(range(10))
    (6, 2, 2, True)
    """
    split = _check_split(split)
    seed = _check_seed(seed)
    if isinstance(num_data, bool) or not isinstance(num_data, numbers.Integral) or num_data < 3:
        raise ValueError(f"num_data must be an integer >= 3 to split in three, got {num_data!r}")
    n_train = int(round(split[0] * num_data))
    n_val = int(round(split[1] * num_data))
    n_train = min(max(n_train, 1), num_data - 2)
    n_val = min(max(n_val, 1), num_data - n_train - 1)
    perm = np.random.default_rng(seed).permutation(num_data)
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]


def static_binarize(probs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One Bernoulli(p) draw per entry of ``probs``, from a generator seeded with ``seed``.

    This is the "static" binarization of Larochelle & Murray (2011): the data set is
    binarized once and then fixed, so every model is trained and evaluated on the same
    binary images (dynamic binarization would draw anew at every epoch).

    >>> static_binarize(torch.tensor([[0.0, 1.0, 0.0, 1.0]]))
    tensor([[0., 1., 0., 1.]])
    """
    seed = _check_seed(seed)
    probs = torch.as_tensor(probs)
    if not probs.is_floating_point():
        probs = probs.to(torch.get_default_dtype())
    if ((probs < 0) | (probs > 1) | probs.isnan()).any():
        raise ValueError("static_binarize needs probabilities in [0, 1]")
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(probs.cpu(), generator=generator).to(probs.device)


def digits(binarize: str | None = None, split=(0.8, 0.1, 0.1), seed: int = 0,
           dtype: torch.dtype = torch.float32) -> Dataset:
    """The 1,797 8x8 handwritten digits of scikit-learn (UCI optdigits test set); no download.

    Pixel intensities (0..16) are divided by 16 into [0, 1] and each image is flattened to
    64 features. ``split`` gives the (train, val, test) fractions of a random partition
    seeded by ``seed``. With ``binarize="static"`` every pixel is replaced, once, by a
    Bernoulli draw with its intensity as probability (Larochelle & Murray 2011), seeded by
    ``seed`` as well, so the binary images are the same on every call.

    Args:
        binarize: ``None`` for gray levels in [0, 1], or ``"static"``.
        split: three positive fractions summing to 1.
        seed: seed of the split and of the binarization.
        dtype: floating dtype of the returned images (labels are int64).

    Example:
        >>> ds = digits(binarize="static", seed=0)
        >>> ds.train.shape, ds.test.shape, ds.image_shape
        (torch.Size([1438, 64]), torch.Size([179, 64]), (8, 8))
        >>> sorted(ds.train.unique().tolist())
        [0.0, 1.0]
        >>> bool(torch.equal(digits(seed=0).val, digits(seed=0).val))
        True
    """
    if binarize not in BINARIZATIONS:
        raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {binarize!r}")
    split = _check_split(split)
    seed = _check_seed(seed)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")

    from sklearn.datasets import load_digits

    raw = load_digits()
    images = torch.as_tensor(raw.data / 16.0, dtype=torch.float64)
    labels = torch.as_tensor(raw.target, dtype=torch.int64)
    if binarize == "static":
        images = static_binarize(images, seed=seed)
    images = images.to(dtype)

    parts = [torch.as_tensor(idx) for idx in split_indices(len(images), split, seed)]
    name = "digits 8x8" + (", statically binarized" if binarize == "static" else ", [0, 1]")
    return Dataset(
        *(images[idx].contiguous() for idx in parts),
        *(labels[idx].contiguous() for idx in parts),
        image_shape=tuple(raw.images.shape[1:]),
        name=name,
    )


DATASETS = {"digits": digits}
"""Loaders by name (what the ``pyro-lvm`` command accepts for ``--data``)."""
