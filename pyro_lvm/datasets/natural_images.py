"""Patches of natural images, whitened as by Olshausen & Field (1996); no download.

The photographs are the two that scikit-learn ships (``load_sample_images``); the whitening
filter R(f) = |f| exp(-(f / f0)^4) flattens their roughly 1/f amplitude spectrum.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .._checks import check_positive_float, check_positive_int
from .dataset import Dataset, _check_dtype, _check_seed, _check_split, _split_dataset

__all__ = ["image_patches"]


@functools.lru_cache(maxsize=4)
def _sample_images(whiten: bool, cutoff: float) -> tuple[np.ndarray, ...]:
    """The gray (optionally whitened) sample photographs, cached and read-only."""
    from sklearn.datasets import load_sample_images

    out = []
    for rgb in load_sample_images().images:
        # ITU-R BT.601 luma, in [0, 1]
        gray = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
        if whiten:
            gray = _whiten_image(gray, cutoff)
        gray.setflags(write=False)
        out.append(gray)
    return tuple(out)


def _whiten_image(image: np.ndarray, cutoff: float) -> np.ndarray:
    """Filter ``image`` with R(f) = |f| exp(-(f / cutoff)^4), f in cycles per pixel.

    The image is mirrored into a (2H, 2W) periodic extension first, so the FFT sees no
    wrap-around edges (which would otherwise put spurious high-pass energy on the borders).
    """
    h, w = image.shape
    ext = np.concatenate([image, image[::-1]], axis=0)
    ext = np.concatenate([ext, ext[:, ::-1]], axis=1)
    f = np.hypot(np.fft.fftfreq(2 * h)[:, None], np.fft.rfftfreq(2 * w)[None, :])
    filt = f * np.exp(-((f / cutoff) ** 4))
    return np.fft.irfft2(np.fft.rfft2(ext) * filt, s=ext.shape)[:h, :w]


def image_patches(size: int = 8, n: int = 10000, whiten: bool = True, seed: int = 0,
                  dtype: torch.dtype = torch.float32, split=(0.8, 0.1, 0.1),
                  cutoff: float = 0.4) -> Dataset:
    """``n`` random ``size`` x ``size`` patches of natural images, whitened as by Olshausen &
    Field (1996, Nature 381:607; 1997, Vision Research 37:3311); no download.

    The images are the two photographs scikit-learn ships (``load_sample_images``:
    china.jpg and flower.jpg, 427 x 640), converted to gray levels in [0, 1] (BT.601 luma).
    With ``whiten=True`` each whole image is filtered in the Fourier domain with

        R(f) = |f| exp(-(f / f0)^4),   f0 = ``cutoff`` cycles/pixel (default 0.4),

    which flattens the roughly 1/f amplitude spectrum of natural images (the |f| factor) and
    rolls off the highest frequencies, where noise and aliasing dominate. Olshausen & Field
    used f0 = 200 cycles/picture on 512 x 512 images; their ``sparsenet`` code writes it as
    ``f_0 = 0.4 * N`` cycles/picture, i.e. 0.4 cycles/pixel (0.8 times the Nyquist frequency
    0.5). Each image is mirrored before the FFT to avoid wrap-around edges. Then ``n``
    patch positions are drawn (image uniformly, position uniformly inside it) from a generator
    seeded with ``seed``; each patch's mean is subtracted, and all patches are divided by
    one common standard deviation so that the overall variance of the returned values is 1.
    ``whiten=False`` gives the same patches (same positions) without the filter, mean-removed
    and scaled the same way.

    Labels are the index of the source image (0 china, 1 flower); ``factors`` holds
    ``image``, ``row`` and ``col`` (top-left corner) of every patch.

    Example:
        >>> ds = image_patches(size=8, n=1000, seed=0)
        >>> ds.train.shape, ds.image_shape, ds.sizes["test"]
        (torch.Size([800, 64]), (8, 8), 100)
        >>> x = torch.cat([ds.train, ds.val, ds.test])
        >>> round(float(x.double().var(unbiased=False)), 4), float(x.mean(1).abs().max()) < 1e-5
        (1.0, True)
    """
    size = check_positive_int(size, "size")
    n = check_positive_int(n, "n")
    if size < 2:
        raise ValueError(f"size must be at least 2 (a patch of 1 pixel is constant after "
                         f"removing its mean), got {size!r}")
    if n < 3:
        raise ValueError(f"n must be an integer >= 3 to split in three, got {n!r}")
    if not isinstance(whiten, bool):
        raise ValueError(f"whiten must be True or False, got {whiten!r}")
    seed = _check_seed(seed)
    dtype = _check_dtype(dtype)
    split = _check_split(split)
    cutoff = check_positive_float(cutoff, "cutoff")
    images = _sample_images(whiten, cutoff)
    smallest = min(min(im.shape) for im in images)
    if size > smallest:
        raise ValueError(f"size={size} is larger than the images "
                         f"({' and '.join('x'.join(map(str, im.shape)) for im in images)})")

    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(images), size=n)
    heights = np.array([im.shape[0] for im in images])
    widths = np.array([im.shape[1] for im in images])
    rows = rng.integers(0, heights[which] - size + 1)
    cols = rng.integers(0, widths[which] - size + 1)
    offsets = np.arange(size)
    patches = np.empty((n, size, size))
    for k, im in enumerate(images):
        sel = np.flatnonzero(which == k)
        patches[sel] = im[rows[sel, None, None] + offsets[None, :, None],
                          cols[sel, None, None] + offsets[None, None, :]]
    patches = patches.reshape(n, size * size)
    patches -= patches.mean(axis=1, keepdims=True)
    patches /= patches.std()

    x = torch.as_tensor(patches).to(dtype)
    labels = torch.as_tensor(which, dtype=torch.int64)
    factors = {"image": labels, "row": torch.as_tensor(rows, dtype=torch.int64),
               "col": torch.as_tensor(cols, dtype=torch.int64)}
    name = (f"natural image patches {size}x{size}, "
            + (f"whitened (Olshausen & Field 1996, f0={cutoff:g})" if whiten else "gray")
            + ", unit variance")
    return _split_dataset(x, labels, split, seed, factors=factors, image_shape=(size, size),
                          name=name)
