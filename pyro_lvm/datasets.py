"""Built-in data sets that need no download, and loaders for local files.

Every loader returns a :class:`Dataset`: train / validation / test tensors with one flattened
datapoint per row, their labels, and the shape to reshape a row into an image.

- :func:`digits`: scikit-learn's 8x8 handwritten digits (gray, static or dynamic binarization).
- :func:`image_patches`: whitened patches of the two photographs scikit-learn ships
  (Olshausen & Field 1996).
- :func:`sprites`: procedural binary shapes rendered from known factors of variation.
- :func:`from_model`: a data set simulated from any ``model(x)``.
- :func:`load_mnist`: MNIST (or Fashion-MNIST) from IDX or ``.npz`` files the user already has.
"""

from __future__ import annotations

import functools
import gzip
import math
import numbers
import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pyro.poutine.messenger import Messenger

from ._checks import check_positive_float, check_positive_int, to_float_tensor
from .handlers import simulate

__all__ = [
    "BINARIZATIONS",
    "DATASETS",
    "SPRITE_FACTORS",
    "SPRITE_SHAPES",
    "Dataset",
    "MissingFileError",
    "Simulated",
    "SparseDictionary",
    "digits",
    "dynamic_binarize",
    "from_model",
    "image_patches",
    "load_mnist",
    "render_sprites",
    "sparse_dictionary",
    "split_indices",
    "sprites",
    "static_binarize",
]

BINARIZATIONS = (None, "static", "dynamic")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into train, validation and test parts.

    Attributes:
        train, val, test: float tensors of shape (N_part, prod(image_shape)).
        train_labels, val_labels, test_labels: int64 tensors of shape (N_part,).
        image_shape: shape of one datapoint seen as an image, e.g. ``(8, 8)``.
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
    image_shape: tuple[int, ...]
    name: str = ""
    binarization: str | None = None
    factors: dict[str, dict[str, torch.Tensor]] | None = None

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


class MissingFileError(FileNotFoundError, ValueError):
    """A data file is missing; both a FileNotFoundError and a ValueError (bad path argument).

    >>> issubclass(MissingFileError, ValueError) and issubclass(MissingFileError, OSError)
    True
    """


class Simulated(NamedTuple):
    """What :func:`from_model` returns: the simulated observations and the latent values.

    >>> x, latents = Simulated(torch.zeros(2), {"z": torch.ones(2)})
    >>> x.shape, sorted(latents)
    (torch.Size([2]), ['z'])
    """

    x: torch.Tensor
    latents: dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# argument checks


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
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(probs.cpu(), generator=generator).to(probs.device)


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


# ---------------------------------------------------------------------------------------------
# scikit-learn's digits


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
    :func:`dynamic_binarize` (Burda et al. 2016).

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
    if binarize == "static":
        images = static_binarize(images, seed=seed)
    images = images.to(dtype)
    name = "digits 8x8" + {None: ", [0, 1]", "static": ", statically binarized",
                           "dynamic": ", [0, 1], binarize dynamically"}[binarize]
    return _split_dataset(images, labels, split, seed, image_shape=tuple(raw.images.shape[1:]),
                          name=name, binarization=binarize)


# ---------------------------------------------------------------------------------------------
# natural-image patches


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


# ---------------------------------------------------------------------------------------------
# procedural sprites

SPRITE_SHAPES = ("square", "ellipse", "triangle", "heart")
"""Shape names; the ``shape`` factor and the labels of :func:`sprites` index this tuple."""

SPRITE_FACTORS = {
    "shape": (0, len(SPRITE_SHAPES) - 1),
    "scale": (0.5, 1.0),
    "rotation": (0.0, 2 * math.pi),
    "x": (0.25, 0.75),
    "y": (0.25, 0.75),
}
"""Ranges of the factors :func:`sprites` draws (shape: inclusive integer range; the others:
uniform on [low, high))."""

_HEART_SCALE, _HEART_SHIFT = 1.26, 0.25  # fits the heart curve into the unit disk


def render_sprites(shape, scale, rotation, x, y, size: int = 16,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Binary images of shapes with the given factors, shape (N, size, size).

    Each shape is defined inside the unit disk by an inside-test: a square (half-side
    1/sqrt(2)), an ellipse (semi-axes 1 and 1/2), an equilateral triangle (vertex up) and a
    heart (the curve (u^2 + v^2 - 1)^3 = u^2 v^3, rescaled). The disk is scaled to radius
    ``scale / 4`` of the image width, rotated counter-clockwise by ``rotation`` radians and
    centred at (``x``, ``y``), fractions of the width from the left and of the height from
    the top. A pixel is 1 when its centre passes the inside-test. The inputs broadcast to one
    dimension of length N; equal factors always give equal images. As in dSprites (Matthey
    et al. 2017), rotation is only identifiable modulo the shape's symmetry (square pi/2,
    ellipse pi, triangle 2 pi/3, heart 2 pi).

    >>> img = render_sprites(shape=[0, 1], scale=1.0, rotation=0.0, x=0.5, y=0.5, size=8)
    >>> img.shape, img.sum((1, 2)).tolist(), img[1, 3].tolist()
    (torch.Size([2, 8, 8]), [4.0, 8.0], [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    """
    size = check_positive_int(size, "size")
    dtype = _check_dtype(dtype)
    arrays = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64))
                                   for v in (shape, scale, rotation, x, y)))
    if arrays[0].ndim != 1:
        raise ValueError(f"factors must broadcast to one dimension, got shape "
                         f"{arrays[0].shape}")
    shape, scale, rotation, x, y = arrays
    for nm, v in (("scale", scale), ("rotation", rotation), ("x", x), ("y", y)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{nm} must be finite, got {v[~np.isfinite(v)][0]!r}")
    if np.any(scale <= 0):
        raise ValueError(f"scale must be positive, got {scale[scale <= 0][0]!r}")
    bad = (shape != np.round(shape)) | (shape < 0) | (shape >= len(SPRITE_SHAPES))
    if bad.any():
        raise ValueError(f"shape must be an integer in 0..{len(SPRITE_SHAPES) - 1} "
                         f"{SPRITE_SHAPES}, got {shape[bad][0]!r}")

    centres = (np.arange(size) + 0.5) / size
    dx = centres[None, None, :] - x[:, None, None]           # to the right
    dy = y[:, None, None] - centres[None, :, None]           # upwards (rows go down)
    cos, sin = np.cos(rotation)[:, None, None], np.sin(rotation)[:, None, None]
    radius = scale[:, None, None] / 4
    u = (cos * dx + sin * dy) / radius                       # rotate by -rotation
    v = (-sin * dx + cos * dy) / radius
    inside = np.stack([
        np.maximum(np.abs(u), np.abs(v)) <= 1 / math.sqrt(2),
        u ** 2 + (2 * v) ** 2 <= 1,
        np.all([u * math.cos(a) + v * math.sin(a) <= 0.5
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)], axis=0),
        _inside_heart(_HEART_SCALE * u, _HEART_SCALE * v + _HEART_SHIFT),
    ])
    pick = shape.astype(np.int64)
    images = np.take_along_axis(inside, pick[None, :, None, None], axis=0)[0]
    return torch.as_tensor(images).to(dtype)


def _inside_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u ** 2 + v ** 2 - 1) ** 3 - u ** 2 * v ** 3 <= 0


def sprites(n: int = 10000, size: int = 16, seed: int = 0, split=(0.8, 0.1, 0.1),
            binarize: str | None = None, dtype: torch.dtype = torch.float32) -> Dataset:
    """``n`` binary images of shapes drawn from known factors of variation (like dSprites,
    Matthey et al. 2017, but rendered here, at any size, with no download).

    The factors are drawn independently from a generator seeded with ``seed``: ``shape``
    uniformly from :data:`SPRITE_SHAPES`, and ``scale``, ``rotation`` (radians), ``x`` and
    ``y`` (centre, as fractions of the image width and height) uniformly on the ranges in
    :data:`SPRITE_FACTORS`; the images are :func:`render_sprites` of those factors, flattened.
    The ranges keep every shape inside the frame, and for ``size >= 12`` every image has at
    least one pixel on (the smallest shape contains a disk of radius 0.125 * 0.5 * size > 0.7
    pixel, which always covers a pixel centre).

    ``ds.factors[part]`` maps each factor name to its values for that part (``shape`` as
    int64, the others as float64); the labels are the shape indices. ``binarize`` is accepted
    (and checked) so that every loader takes the same arguments, but the images are already
    binary, so it changes nothing.

    Example:
        >>> ds = sprites(n=200, size=16, seed=0)
        >>> ds.train.shape, ds.image_shape, sorted(ds.factors["train"])
        (torch.Size([160, 256]), (16, 16), ['rotation', 'scale', 'shape', 'x', 'y'])
        >>> sorted(ds.train.unique().tolist()), bool((ds.train.sum(1) > 0).all())
        ([0.0, 1.0], True)
    """
    n = check_positive_int(n, "n")
    if n < 3:
        raise ValueError(f"n must be an integer >= 3 to split in three, got {n!r}")
    size = check_positive_int(size, "size")
    if size < 12:
        raise ValueError(f"size must be at least 12 so that the smallest shapes cover a pixel, "
                         f"got {size!r}")
    seed = _check_seed(seed)
    split = _check_split(split)
    _check_binarize(binarize)
    dtype = _check_dtype(dtype)

    rng = np.random.default_rng(seed)
    values = {"shape": rng.integers(0, len(SPRITE_SHAPES), size=n)}
    for name in ("scale", "rotation", "x", "y"):
        low, high = SPRITE_FACTORS[name]
        values[name] = rng.uniform(low, high, size=n)
    images = render_sprites(**values, size=size, dtype=dtype).reshape(n, size * size)
    factors = {k: torch.as_tensor(v) for k, v in values.items()}
    return _split_dataset(images, factors["shape"], split, seed, factors=factors,
                          image_shape=(size, size),
                          name=f"sprites {size}x{size} ({', '.join(SPRITE_SHAPES)}), binary")


# ---------------------------------------------------------------------------------------------
# simulated from a model


class _ObservedSites(Messenger):
    """Records the names of observed sample sites (runs before ``uncondition`` clears them)."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def _process_message(self, msg):
        if msg["type"] == "sample" and msg["is_observed"]:
            self.names.append(msg["name"])


def from_model(model: Callable, data_like, n: int | None = None, seed: int = 0,
               obs_site: str | None = None) -> Simulated:
    """Simulate a data set from ``model(x)``: observations and the latents that produced them.

    The model is run once with its observation sites un-conditioned
    (:func:`pyro_lvm.handlers.simulate`); ``data_like`` only fixes the shape (and dtype) of
    the simulated data. With ``n``, the data set has ``n`` rows shaped like the rows of
    ``data_like`` instead. The draw is seeded by ``seed`` inside
    ``torch.random.fork_rng``, so torch's global random state is left as it was, and runs
    without gradients. Use this to check inference on data whose latents are known (the
    self-consistency "Bayes' loop").

    Args:
        model: a Pyro program ``model(x)`` that observes ``x`` with ``obs=x``.
        data_like: a tensor (or array) shaped like the data.
        n: number of datapoints to simulate (default ``len(data_like)``).
        seed: seed of the simulation.
        obs_site: name of the observation site, needed only when the model observes more than
            one site.

    Returns:
        ``Simulated(x, latents)``: the simulated observations (shape of ``data_like``, or
        ``(n, *data_like.shape[1:])``) and every other sample site's value by name.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(0., 1.))
        ...         pyro.sample("x", dist.Normal(z, 0.1).expand([x.shape[0]]), obs=x)
        >>> x, latents = from_model(model, torch.zeros(5), n=1000, seed=0)
        >>> x.shape, sorted(latents), float((x - latents["z"]).std()) < 0.15
        (torch.Size([1000]), ['z'], True)
    """
    if not callable(model):
        raise ValueError(f"model must be callable, got {model!r}")
    try:
        like = to_float_tensor(data_like, "data_like")
    except TypeError as e:
        raise ValueError(str(e)) from None
    if n is not None:
        n = check_positive_int(n, "n")
        like = torch.zeros((n, *like.shape[1:]), dtype=like.dtype, device=like.device)
    seed = _check_seed(seed)

    observed = _ObservedSites()
    devices = [like.device.index or 0] if like.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        values = simulate(observed(model), like)
    if obs_site is None:
        if len(observed.names) != 1:
            raise ValueError(
                f"from_model needs exactly one observed site (obs=x) to know which is the "
                f"data, found {observed.names}; pass obs_site=")
        obs_site = observed.names[0]
    elif obs_site not in observed.names:
        raise ValueError(f"obs_site={obs_site!r} is not an observed site of the model "
                         f"(observed: {observed.names})")
    x = values[obs_site].detach()
    if x.shape != like.shape:
        raise ValueError(f"the simulated {obs_site!r} has shape {tuple(x.shape)}, but the data "
                         f"has shape {tuple(like.shape)}")
    latents = {k: v.detach() for k, v in values.items() if k not in observed.names}
    return Simulated(x, latents)


class SparseDictionary(NamedTuple):
    """What :func:`sparse_dictionary` returns: the (patch_dim, num_features) unit-norm atoms,
    the (n, num_features) codes and the (n, patch_dim) noisy patches."""

    atoms: torch.Tensor
    codes: torch.Tensor
    x: torch.Tensor


def sparse_dictionary(n: int, patch_dim: int, num_features: int, active: int,
                      noise: float = 0.05, seed: int = 0) -> SparseDictionary:
    """Patches made of ``active`` atoms each of a random unit-norm dictionary (Gaussian
    amplitudes, a uniformly random support), plus N(0, noise^2) pixel noise: the setting of
    dictionary-recovery experiments (e.g. Aharon, Elad & Bruckstein 2006, K-SVD, section V).
    Score a learned dictionary with :func:`pyro_lvm.diagnostics.feature_recovery`.

    Example:
        >>> data = sparse_dictionary(100, patch_dim=16, num_features=24, active=3)
        >>> data.atoms.shape, data.x.shape, (data.codes != 0).sum(1).unique().tolist()
        (torch.Size([16, 24]), torch.Size([100, 16]), [3])
    """
    n = check_positive_int(n, "n")
    patch_dim = check_positive_int(patch_dim, "patch_dim")
    num_features = check_positive_int(num_features, "num_features")
    active = check_positive_int(active, "active")
    if active > num_features:
        raise ValueError(f"active must be at most num_features ({num_features}), got {active}")
    noise = check_positive_float(noise, "noise")
    g = torch.Generator().manual_seed(_check_seed(seed))
    atoms = torch.randn(patch_dim, num_features, generator=g)
    atoms = atoms / atoms.norm(dim=0)
    support = torch.rand(n, num_features, generator=g).argsort(dim=1) < active
    codes = torch.randn(n, num_features, generator=g) * support
    x = codes @ atoms.T + noise * torch.randn(n, patch_dim, generator=g)
    return SparseDictionary(atoms, codes, x)


# ---------------------------------------------------------------------------------------------
# MNIST from local files

_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801
_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _find_file(directory: Path, names: Sequence[str]) -> Path:
    for name in names:
        for candidate in (directory / name, directory / (name + ".gz")):
            if candidate.is_file():
                return candidate
    raise MissingFileError(f"MNIST file not found: {directory / names[0]} (nor .gz, nor "
                           f"{', '.join(names[1:])})")


def _read_idx(file: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (LeCun et al.'s MNIST format): big-endian int32
    magic number 0x000008DD (DD = number of dimensions), DD big-endian int32 sizes, the data."""
    try:
        if file.suffix == ".gz":
            with gzip.open(file, "rb") as fh:
                data = fh.read()
        else:
            data = file.read_bytes()
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(f"cannot read {file}: {err}") from err
    if len(data) < 4:
        raise ValueError(f"{file} is truncated: {len(data)} bytes, less than an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = "images" if magic == _IDX_IMAGES else "labels"
        raise ValueError(f"{file} has magic number 0x{found:08X}, expected 0x{magic:08X} "
                         f"(IDX {kind} of unsigned bytes)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{file} is truncated: expected at least {header} header bytes, "
                         f"got {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(f"{file} is {what}: expected {expected} bytes for dims {dims}, "
                         f"got {len(data)}")
    if any(d == 0 for d in dims):
        raise ValueError(f"{file} holds no data (dims {dims})")
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=header).reshape(dims)


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        npz = np.load(file, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"it holds a single {type(npz).__name__}, not named arrays")
        with npz:
            arrays = {k: npz[k] for k in npz.files if k in keys}
            present = list(npz.files)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise ValueError(f"cannot read {file} as .npz: {err}") from err
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"{file} lacks the arrays {missing} (has {present}); an MNIST .npz "
                         f"needs {list(keys)}")
    return arrays


def _pixels(arr: np.ndarray, source: str, dtype: torch.dtype) -> torch.Tensor:
    """Images (N, H, W) in [0, 1] as ``dtype``: integer pixels / 255, floats checked."""
    if arr.ndim != 3:
        raise ValueError(f"{source}: images must have shape (N, height, width), got "
                         f"{arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"{source}: integer pixels must be in 0..255, got "
                             f"{arr.min()}..{arr.max()}")
        return torch.as_tensor(arr).to(dtype) / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{source}: float pixels must be in [0, 1]")
        return torch.as_tensor(arr).to(dtype)
    raise ValueError(f"{source}: images must be integer or float arrays, got {arr.dtype}")


def _labels(arr: np.ndarray, n: int, source: str) -> torch.Tensor:
    if arr.ndim != 1 or len(arr) != n or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{source}: labels must be {n} integers (one per image), got an "
                         f"array of shape {arr.shape} and dtype {arr.dtype}")
    return torch.as_tensor(arr.astype(np.int64))


def load_mnist(path, binarize: str | None = None, seed: int = 0, val_size: int = 10000,
               dtype: torch.dtype = torch.float32, name: str = "MNIST") -> Dataset:
    """MNIST (LeCun et al. 1998) from files you already have; nothing is downloaded.

    ``path`` is either a directory holding the four IDX files ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
    (each optionally gzipped, ``.gz``; the ``train-images.idx3-ubyte`` spelling works too), or
    a ``.npz`` file with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (as Keras
    saves it). Fashion-MNIST ships in the same format and loads the same way.

    Pixels are divided by 255 into [0, 1] and flattened. The validation set is the *last*
    ``val_size`` images of the training file (the 50,000 / 10,000 split of the binarized
    MNIST of Larochelle & Murray 2011); ``val_size=0`` keeps all training images (an empty
    validation set). ``binarize`` is as in :func:`digits`: ``"static"`` binarizes train,
    validation and test once with a generator seeded by ``seed``; ``"dynamic"`` returns gray
    levels marked for :func:`dynamic_binarize` at every epoch (Burda et al. 2016).

    Errors are ValueErrors naming the file: a missing file (:class:`MissingFileError`, also a
    FileNotFoundError), a wrong magic number, or a length that does not match the header.

    Example:
        >>> import tempfile
        >>> rng = np.random.default_rng(0)
        >>> f = Path(tempfile.mkdtemp()) / "mnist.npz"
        >>> np.savez(f, x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        ...          y_train=rng.integers(0, 10, 30), y_test=rng.integers(0, 10, 5),
        ...          x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8))
        >>> ds = load_mnist(f, val_size=10, binarize="static")
        >>> ds.sizes, ds.image_shape, sorted(ds.test.unique().tolist())
        ({'train': 20, 'val': 10, 'test': 5}, (28, 28), [0.0, 1.0])
    """
    binarize = _check_binarize(binarize)
    seed = _check_seed(seed)
    dtype = _check_dtype(dtype)
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Integral) or val_size < 0:
        raise ValueError(f"val_size must be a non-negative integer, got {val_size!r}")
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"path must be a directory or an .npz file, got {path!r}")
    path = Path(path)
    if path.is_dir():
        files = {k: _find_file(path, names) for k, names in _MNIST_FILES.items()}
        arrays = {
            "x_train": _read_idx(files["train_images"], _IDX_IMAGES),
            "y_train": _read_idx(files["train_labels"], _IDX_LABELS),
            "x_test": _read_idx(files["test_images"], _IDX_IMAGES),
            "y_test": _read_idx(files["test_labels"], _IDX_LABELS),
        }
        sources = {"x_train": files["train_images"], "y_train": files["train_labels"],
                   "x_test": files["test_images"], "y_test": files["test_labels"]}
    elif path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"path must be a directory of IDX files or an .npz file, got "
                             f"{path}")
        arrays = _read_npz(path)
        sources = {k: f"{path} [{k}]" for k in arrays}
    else:
        raise MissingFileError(f"MNIST path not found: {path}")

    # float32 unless float64 is asked for: the full MNIST in float64 would take 440 MB
    work = torch.float64 if dtype == torch.float64 else torch.float32
    x_train = _pixels(arrays["x_train"], sources["x_train"], work)
    x_test = _pixels(arrays["x_test"], sources["x_test"], work)
    y_train = _labels(arrays["y_train"], len(x_train), f"{sources['y_train']}")
    y_test = _labels(arrays["y_test"], len(x_test), f"{sources['y_test']}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"training images are {tuple(x_train.shape[1:])} but test images are "
                         f"{tuple(x_test.shape[1:])} ({sources['x_train']}, "
                         f"{sources['x_test']})")
    if val_size >= len(x_train):
        raise ValueError(f"val_size={val_size} must be smaller than the {len(x_train)} "
                         f"training images")
    image_shape = tuple(x_train.shape[1:])
    n_train = len(x_train) - val_size
    images = torch.cat([x_train, x_test]).reshape(-1, math.prod(image_shape))
    if binarize == "static":
        images = static_binarize(images, seed=seed)
    images = images.to(dtype)
    train, val, test = images[:n_train], images[n_train:len(x_train)], images[len(x_train):]
    label = {None: "[0, 1]", "static": "statically binarized",
             "dynamic": "[0, 1], binarize dynamically"}[binarize]
    return Dataset(train, val, test, y_train[:n_train], y_train[n_train:], y_test,
                   image_shape=image_shape, name=f"{name}, {label}", binarization=binarize)


DATASETS = {"digits": digits, "sprites": sprites}
"""Loaders by name (what the ``pyro-lvm`` command accepts for ``--data``); each accepts
``seed=`` and ``binarize="static"``. :func:`image_patches` (real-valued) and
:func:`load_mnist` (needs a path) are not registered."""
