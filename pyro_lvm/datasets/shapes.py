"""Procedural sprites: binary images of shapes rendered from known factors of variation
(shape, scale, rotation, position), like dSprites (Matthey et al. 2017) but with no download."""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import check_positive_int
from .dataset import (
    Dataset,
    _binarized,
    _check_binarize,
    _check_dtype,
    _check_seed,
    _check_split,
    _split_dataset,
)

__all__ = ["SPRITE_FACTORS", "SPRITE_SHAPES", "render_sprites", "sprites"]

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
    int64, the others as float64); the labels are the shape indices. ``binarize`` is as in
    :func:`~pyro_lvm.datasets.digits`, so that every loader takes the same arguments: the
    images are already binary, so the pixels are the same for every choice (a Bernoulli draw
    of a 0 or a 1 is that 0 or 1), but the data set records it in ``ds.binarization`` and
    ``ds.name``, so that code branching on ``binarization == "dynamic"`` does what was asked.

    Example:
        >>> ds = sprites(n=200, size=16, seed=0)
        >>> ds.train.shape, ds.image_shape, sorted(ds.factors["train"])
        (torch.Size([160, 256]), (16, 16), ['rotation', 'scale', 'shape', 'x', 'y'])
        >>> sorted(ds.train.unique().tolist()), bool((ds.train.sum(1) > 0).all())
        ([0.0, 1.0], True)
        >>> sprites(n=200, binarize="dynamic").binarization
        'dynamic'
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
    binarize = _check_binarize(binarize)
    dtype = _check_dtype(dtype)

    rng = np.random.default_rng(seed)
    values = {"shape": rng.integers(0, len(SPRITE_SHAPES), size=n)}
    for name in ("scale", "rotation", "x", "y"):
        low, high = SPRITE_FACTORS[name]
        values[name] = rng.uniform(low, high, size=n)
    images = render_sprites(**values, size=size, dtype=dtype).reshape(n, size * size)
    images = _binarized(images, binarize, seed)
    factors = {k: torch.as_tensor(v) for k, v in values.items()}
    how = {None: "", "static": ", statically binarized", "dynamic": ", binarize dynamically"}
    return _split_dataset(images, factors["shape"], split, seed, factors=factors,
                          image_shape=(size, size), binarization=binarize,
                          name=f"sprites {size}x{size} ({', '.join(SPRITE_SHAPES)}), binary"
                               f"{how[binarize]}")
