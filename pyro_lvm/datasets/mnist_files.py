"""MNIST (or Fashion-MNIST) from files the user already has: IDX files (optionally gzipped)
or a Keras-style ``.npz``; nothing is downloaded. Every error names the file."""

from __future__ import annotations

import gzip
import math
import numbers
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .dataset import (
    _BINARIZATION_NAMES,
    Dataset,
    _binarized,
    _check_binarize,
    _check_dtype,
    _check_seed,
)

__all__ = ["MissingFileError", "load_mnist"]


class MissingFileError(FileNotFoundError, ValueError):
    """A data file is missing; both a FileNotFoundError and a ValueError (bad path argument).

    >>> issubclass(MissingFileError, ValueError) and issubclass(MissingFileError, OSError)
    True
    """


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
    validation set). ``binarize`` is as in :func:`~pyro_lvm.datasets.digits`: ``"static"``
    binarizes train, validation and test once with a generator seeded by ``seed``;
    ``"dynamic"`` returns gray levels marked for :func:`~pyro_lvm.datasets.dynamic_binarize`
    at every epoch (Burda et al. 2016).

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
    images = _binarized(images, binarize, seed).to(dtype)
    train, val, test = images[:n_train], images[n_train:len(x_train)], images[len(x_train):]
    return Dataset(train, val, test, y_train[:n_train], y_train[n_train:], y_test,
                   image_shape=image_shape, name=f"{name}, {_BINARIZATION_NAMES[binarize]}",
                   binarization=binarize)
