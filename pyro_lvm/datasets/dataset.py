"""The :class:`Dataset` container, seeded train / validation / test splits, and binarization.

Every loader of :mod:`pyro_lvm.datasets` returns a :class:`Dataset` built by
the helpers here (or directly, for files that come split) and checks its arguments with the
same helpers, so that every loader takes ``seed``, ``split``, ``binarize`` and ``dtype`` with
the same meaning and the same errors.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import rng

__all__ = [
    "BINARIZATIONS",
    "Dataset",
    "dynamic_binarize",
    "split_indices",
    "static_binarize",
]

BINARIZATIONS = (None, "static", "dynamic")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into train, validation and test parts.

    Attributes:
        train, val, test: float tensors of shape (N_part, D), D = prod(image_shape) for images.
        train_labels, val_labels, test_labels: int64 tensors of shape (N_part,).
        image_shape: shape of one datapoint seen as an image, e.g. ``(8, 8)``, or ``None``
            when the rows are not images.
        name: a short description (which data, which binarization).
        binarization: ``None`` (the values are the data), ``"static"`` (binarized once, fixed)
            or ``"dynamic"``: the tensors hold gray levels in [0, 1] and a training loop should
            draw fresh binary data with :func:`dynamic_binarize` at every epoch.
        factors: ``None``, or the known values that generated each datapoint, as
            ``{part: {factor name: tensor of shape (N_part,)}}`` with ``part`` one of
            ``"train"``, ``"val"``, ``"test"`` (e.g. ``ds.factors["train"]["x"]``), so that
            latents can be compared with the true factors of variation.

    Example:
        >>> ds = Dataset(torch.zeros(3, 4), torch.zeros(1, 4), torch.zeros(1, 4),
        ...              torch.zeros(3, dtype=torch.long), torch.zeros(1, dtype=torch.long),
        ...              torch.zeros(1, dtype=torch.long), image_shape=(2, 2), name="toy")
        >>> ds.data_dim, ds.sizes, ds.binarization, ds.factors
        (4, {'train': 3, 'val': 1, 'test': 1}, None, None)
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    val_labels: torch.Tensor
    test_labels: torch.Tensor
    image_shape: tuple[int, ...] | None
    name: str = ""
    binarization: str | None = None
    factors: dict[str, dict[str, torch.Tensor]] | None = None

    @property
    def data_dim(self) -> int:
        """Number of features per datapoint (pixels per image).

        >>> from pyro_lvm.datasets import digits
        >>> digits().data_dim
        64
        """
        return int(self.train.shape[-1])

    @property
    def sizes(self) -> dict[str, int]:
        """Number of datapoints in each part.

        >>> from pyro_lvm.datasets import digits
        >>> digits().sizes
        {'train': 1438, 'val': 180, 'test': 179}
        """
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


# ---------------------------------------------------------------------------------------------
# argument checks shared by the loaders


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


def _check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def _check_binarize(binarize) -> str | None:
    if not (binarize is None or (isinstance(binarize, str) and binarize in BINARIZATIONS)):
        raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {binarize!r}")
    return binarize


def _check_probs(probs, caller: str) -> torch.Tensor:
    probs = torch.as_tensor(probs)
    if not probs.is_floating_point():
        probs = probs.to(torch.get_default_dtype())
    if ((probs < 0) | (probs > 1) | probs.isnan()).any():
        raise ValueError(f"{caller} needs probabilities in [0, 1]")
    return probs


def _split_dataset(images: torch.Tensor, labels: torch.Tensor, split, seed: int,
                  factors: dict[str, torch.Tensor] | None = None, **fields) -> Dataset:
    """Partition rows with :func:`split_indices` and pack them into a :class:`Dataset`."""
    parts = [torch.as_tensor(idx) for idx in split_indices(len(images), split, seed)]
    if factors is not None:
        factors = {part: {k: v[idx].contiguous() for k, v in factors.items()}
                   for part, idx in zip(("train", "val", "test"), parts, strict=True)}
    return Dataset(
        *(images[idx].contiguous() for idx in parts),
        *(labels[idx].contiguous() for idx in parts),
        factors=factors,
        **fields,
    )


_BINARIZATION_NAMES = {None: "[0, 1]", "static": "statically binarized",
                      "dynamic": "[0, 1], binarize dynamically"}
"""How a loader's ``name`` says which binarization it applied."""


# ---------------------------------------------------------------------------------------------
# splits and binarization


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
    binary images (dynamic binarization, :func:`dynamic_binarize`, draws anew at every epoch).

    >>> static_binarize(torch.tensor([[0.0, 1.0, 0.0, 1.0]]))
    tensor([[0., 1., 0., 1.]])
    """
    seed = _check_seed(seed)
    probs = _check_probs(probs, "static_binarize")
    return torch.bernoulli(probs.cpu(), generator=rng.generator(seed)).to(probs.device)


def dynamic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli(x) draw of every entry of the gray levels ``x`` in [0, 1].

    "Dynamic" binarization (as in Burda, Grosse & Salakhutdinov 2016, ICLR): a training loop
    calls this on the gray-level training data at *every epoch*, so the model sees a new
    binary sample of each image each time, which acts as a regularizer.
    For evaluation, binarize the test set once (:func:`static_binarize`, or one draw with a
    seeded ``generator``) so all models are compared on the same binary images. Without a
    ``generator`` the draw uses (and advances) torch's global random state::

        ds = digits(binarize="dynamic")
        for epoch in range(epochs):
            x_epoch = dynamic_binarize(ds.train)   # new binary images every epoch
            ...

    >>> g = torch.Generator().manual_seed(0)
    >>> x = dynamic_binarize(torch.full((2, 5), 0.5), generator=g)
    >>> x.shape, sorted(x.unique().tolist())
    (torch.Size([2, 5]), [0.0, 1.0])
    >>> dynamic_binarize(torch.tensor([0.0, 1.0]))
    tensor([0., 1.])
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
    probs = _check_probs(x, "dynamic_binarize")
    return torch.bernoulli(probs, generator=generator)


def _binarized(images: torch.Tensor, binarize: str | None, seed: int) -> torch.Tensor:
    """``images`` as ``binarize`` asks: ``"static"`` draws them once (:func:`static_binarize`,
    seeded by ``seed``); ``None`` and ``"dynamic"`` (drawn later, at every epoch) keep them."""
    return static_binarize(images, seed=seed) if binarize == "static" else images
