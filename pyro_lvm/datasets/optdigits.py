"""scikit-learn's 8x8 handwritten digits (the UCI optdigits test set): gray, or binarized."""

from __future__ import annotations

import torch

from .dataset import (
    _BINARIZATION_NAMES,
    Dataset,
    _binarized,
    _check_binarize,
    _check_dtype,
    _check_seed,
    _check_split,
    _split_dataset,
)

__all__ = ["digits"]


def digits(binarize: str | None = None, split=(0.8, 0.1, 0.1), seed: int = 0,
           dtype: torch.dtype = torch.float32) -> Dataset:
    """The 1,797 8x8 handwritten digits of scikit-learn (UCI optdigits test set); no download.

    Pixel intensities (0..16) are divided by 16 into [0, 1] and each image is flattened to
    64 features. ``split`` gives the (train, val, test) fractions of a random partition
    seeded by ``seed``. With ``binarize="static"`` every pixel is replaced, once, by a
    Bernoulli draw with its intensity as probability (Larochelle & Murray 2011), seeded by
    ``seed`` as well, so the binary images are the same on every call. With
    ``binarize="dynamic"`` the gray levels are returned unchanged but the data set is marked
    ``binarization="dynamic"``: the training loop draws new binary images every epoch with
    :func:`~pyro_lvm.datasets.dynamic_binarize` (Burda et al. 2016).

    Args:
        binarize: ``None`` for gray levels in [0, 1], ``"static"`` or ``"dynamic"``.
        split: three positive fractions summing to 1.
        seed: seed of the split and of the static binarization.
        dtype: floating dtype of the returned images (labels are int64).

    Example:
        >>> ds = digits(binarize="static", seed=0)
        >>> ds.train.shape, ds.test.shape, ds.image_shape, ds.binarization
        (torch.Size([1438, 64]), torch.Size([179, 64]), (8, 8), 'static')
        >>> sorted(ds.train.unique().tolist())
        [0.0, 1.0]
        >>> bool(torch.equal(digits(seed=0).val, digits(seed=0).val))
        True
        >>> dyn = digits(binarize="dynamic")
        >>> dyn.binarization, bool(torch.equal(dyn.train, digits().train))
        ('dynamic', True)
    """
    binarize = _check_binarize(binarize)
    split = _check_split(split)
    seed = _check_seed(seed)
    dtype = _check_dtype(dtype)

    from sklearn.datasets import load_digits

    raw = load_digits()
    images = torch.as_tensor(raw.data / 16.0, dtype=torch.float64)
    labels = torch.as_tensor(raw.target, dtype=torch.int64)
    images = _binarized(images, binarize, seed).to(dtype)
    return _split_dataset(images, labels, split, seed, image_shape=tuple(raw.images.shape[1:]),
                          name=f"digits 8x8, {_BINARIZATION_NAMES[binarize]}",
                          binarization=binarize)
