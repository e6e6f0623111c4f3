"""Built-in data sets that need no download, and loaders for local files.

Every loader returns a :class:`Dataset`: train / validation / test tensors with one flattened
datapoint per row, their labels, and the shape to reshape a row into an image.

- :func:`digits`: scikit-learn's 8x8 handwritten digits (gray, static or dynamic binarization).
- :func:`image_patches`: whitened patches of the two photographs scikit-learn ships
  (Olshausen & Field 1996).
- :func:`sprites`: procedural binary shapes rendered from known factors of variation.
- :func:`from_model`: a data set simulated from any ``model(x)``; :func:`sparse_dictionary`:
  sparse combinations of a known random dictionary.
- :func:`load_mnist`: MNIST (or Fashion-MNIST) from IDX or ``.npz`` files the user already has.
- :func:`load_file`: the rows of a user's own ``.npy``, ``.npz``, ``.csv`` or ``.pt`` file
  (:func:`parse_image_shape` reads ``"28x28"`` for it).

The modules: ``dataset`` (the container, splits, binarization), ``optdigits``,
``natural_images``, ``shapes`` (sprites), ``mnist_files``, ``files`` and ``simulation``; import the
names from here.
"""

from __future__ import annotations

from .dataset import BINARIZATIONS, Dataset, dynamic_binarize, split_indices, static_binarize
from .files import DATA_FILE_SUFFIXES, UnreadableFileError, load_file, parse_image_shape
from .mnist_files import MissingFileError, load_mnist
from .natural_images import image_patches
from .optdigits import digits
from .shapes import SPRITE_FACTORS, SPRITE_SHAPES, render_sprites, sprites
from .simulation import Simulated, SparseDictionary, from_model, sparse_dictionary

__all__ = [
    "BINARIZATIONS",
    "DATASETS",
    "DATA_FILE_SUFFIXES",
    "SPRITE_FACTORS",
    "SPRITE_SHAPES",
    "Dataset",
    "MissingFileError",
    "Simulated",
    "SparseDictionary",
    "UnreadableFileError",
    "digits",
    "dynamic_binarize",
    "from_model",
    "image_patches",
    "load_file",
    "load_mnist",
    "parse_image_shape",
    "render_sprites",
    "sparse_dictionary",
    "split_indices",
    "sprites",
    "static_binarize",
]

DATASETS = {"digits": digits, "sprites": sprites}
"""Loaders by name (what the ``pyro-lvm`` command accepts for ``--data``); each accepts
``seed=`` and ``binarize="static"``. :func:`image_patches` (real-valued) and
:func:`load_mnist` and :func:`load_file` (need a path) are not registered."""
