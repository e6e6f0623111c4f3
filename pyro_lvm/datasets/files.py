"""A user's own data file (``.npy``, ``.npz``, ``.csv``, ``.pt``) as a :class:`Dataset`, one
datapoint per row; what ``pyro-lvm fit --data PATH`` loads. Every error names the file."""

from __future__ import annotations

import csv
import numbers
import os
import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .dataset import (
    Dataset,
    _binarized,
    _check_binarize,
    _check_dtype,
    _check_seed,
    _check_split,
    _split_dataset,
)
from .mnist_files import MissingFileError

__all__ = ["DATA_FILE_SUFFIXES", "UnreadableFileError", "load_file", "parse_image_shape"]

DATA_FILE_SUFFIXES = (".npy", ".npz", ".csv", ".pt")
"""The file types :func:`load_file` reads, by extension (case-insensitive)."""

_NPY_MAGIC, _ZIP_MAGIC, _PICKLE_MAGIC = b"\x93NUMPY", b"PK", b"\x80"
_DATA_KEYS = ("x", "data")
"""Names of the data array in an ``.npz`` file or a dict saved with ``torch.save``."""


class UnreadableFileError(OSError, ValueError):
    """A data file that exists but cannot be read (a directory, no permission, corrupt
    content); both an OSError and a ValueError, like :class:`MissingFileError`.

    >>> issubclass(UnreadableFileError, OSError) and issubclass(UnreadableFileError, ValueError)
    True
    """


def parse_image_shape(text: str) -> tuple[int, int]:
    """``"HEIGHTxWIDTH"`` (as ``--image-shape`` takes it) as ``(height, width)``.

    >>> parse_image_shape("28x28"), parse_image_shape(" 8 X 4 ")
    ((28, 28), (8, 4))
    >>> parse_image_shape("28x")
    Traceback (most recent call last):
    ...
    ValueError: image shape must be HEIGHTxWIDTH with two integers, e.g. 28x28, got '28x'
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"image shape must be HEIGHTxWIDTH with two integers, e.g. 28x28, "
                         f"got {text!r}")
    height, width = int(match[1]), int(match[2])
    if height < 1 or width < 1:
        raise ValueError(f"image shape must have a positive height and width, got {text!r}")
    return height, width


def _check_image_shape(image_shape) -> tuple[int, int] | None:
    if image_shape is None:
        return None
    if isinstance(image_shape, str):
        return parse_image_shape(image_shape)
    if (not isinstance(image_shape, Sequence) or len(image_shape) != 2
            or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
                   for s in image_shape)):
        raise ValueError(f"image_shape must be None, (height, width) with positive integers "
                         f"or a string like '28x28', got {image_shape!r}")
    return int(image_shape[0]), int(image_shape[1])


def _check_path(path) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"path must be a file name, got {path!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(f"data file not found: {path}")
    if path.is_dir():
        raise UnreadableFileError(f"{path} is a directory, not a data file")
    if path.suffix.lower() not in DATA_FILE_SUFFIXES:
        raise ValueError(f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
                         f"supported: {', '.join(DATA_FILE_SUFFIXES)}")
    return path


# ---------------------------------------------------------------------------------------------
# readers: each returns the array as stored and, for text, the line number of every row


def _pick(path: Path, names: list[str], what: str) -> str:
    """The name of the data among ``names``: ``x``, else ``data``, else the only one."""
    for key in _DATA_KEYS:
        if key in names:
            return key
    if len(names) == 1:
        return names[0]
    if not names:
        raise ValueError(f"{path} holds no data (no {what})")
    raise ValueError(f"{path} holds {len(names)} {what} {names}; name the data "
                     f"{' or '.join(repr(k) for k in _DATA_KEYS)}, or save only one")


def _signature(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError as err:
        raise UnreadableFileError(f"cannot read {path}: {err.strerror or err}") from err


def _read_numpy(path: Path) -> tuple[np.ndarray, None]:
    if not _signature(path, 6).startswith((_NPY_MAGIC, _ZIP_MAGIC)):
        raise UnreadableFileError(f"{path} is not a .npy or .npz file (no numpy or zip "
                                  f"signature at its start)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise UnreadableFileError(f"cannot read {path} with numpy.load: {err}") from err
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            key = _pick(path, list(loaded.files), "arrays")
            try:
                loaded = loaded[key]
            except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
                raise UnreadableFileError(f"cannot read the array {key!r} of {path}: "
                                          f"{err}") from err
    return loaded, None


def _read_torch(path: Path) -> tuple[np.ndarray, None]:
    if not _signature(path, 4).startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise UnreadableFileError(f"{path} is not a file written by torch.save (no zip or "
                                  f"pickle signature at its start)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnreadableFileError(
            f"cannot read {path} with torch.load(weights_only=True): it holds objects other "
            f"than tensors; save a tensor or a dict of tensors") from err
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnreadableFileError(f"cannot read {path} with torch.load: {first}") from err
    if isinstance(obj, dict):
        names = [str(k) for k in obj]
        obj = obj[list(obj)[names.index(_pick(path, names, "entries"))]]
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a tensor (or a dict whose "
                         f"{' or '.join(repr(k) for k in _DATA_KEYS)} entry is a tensor)")
    obj = obj.detach()
    if obj.layout != torch.strided:
        obj = obj.to_dense()
    if obj.is_complex():
        raise ValueError(f"{path}: values must be real numbers, got dtype {obj.dtype}")
    if obj.is_floating_point() and obj.dtype not in (torch.float32, torch.float64):
        obj = obj.float()  # float16 / bfloat16: numpy has no bfloat16
    return obj.numpy(), None


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> tuple[np.ndarray, list[int]]:
    """Numbers separated by commas (if the first row has one) or whitespace; ``#`` starts a
    comment; a first row none of whose fields is a number is a header."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a UTF-8 text file ({err.reason} at byte "
                         f"{err.start})") from err
    except OSError as err:
        raise UnreadableFileError(f"cannot read {path}: {err.strerror or err}") from err
    rows = [(i, line.split("#", 1)[0]) for i, line in enumerate(text.splitlines(), 1)]
    rows = [(i, line) for i, line in rows if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no data (no rows)")
    delimiter = "," if "," in rows[0][1] else None

    def fields(line: str) -> list[str]:
        if delimiter is None:
            return line.split()
        return [f.strip() for f in next(csv.reader([line], skipinitialspace=True))]

    header, header_line = fields(rows[0][1]), rows[0][0]
    if any(_is_number(f) for f in header):
        header = None
    else:
        rows = rows[1:]
        if not rows:
            raise ValueError(f"{path} holds no data (a header row, no data rows)")
    lines = [i for i, _ in rows]
    try:
        data = np.loadtxt([line for _, line in rows], delimiter=delimiter, ndmin=2,
                          dtype=np.float64, comments=None,
                          **({"quotechar": '"'} if delimiter else {}))
    except ValueError:
        data = _scan_csv(path, rows, fields, header, header_line)
    if header is not None and data.shape[1] != len(header):
        raise ValueError(f"{path}: line {lines[0]} has {data.shape[1]} columns, expected "
                         f"{len(header)} as in the header (line {header_line})")
    return data, lines


def _scan_csv(path: Path, rows: list[tuple[int, str]], fields, header,
              header_line: int) -> np.ndarray:
    """Parse ``rows`` field by field, raising the first ragged row or the non-numeric columns
    (what ``np.loadtxt`` failed on)."""
    split = [(i, fields(line)) for i, line in rows]
    ref_line, ref = split[0]
    width = len(ref) if header is None else len(header)
    for i, row in split:
        if len(row) != width:
            ref_what = f"line {ref_line}" if header is None else f"the header (line {header_line})"
            raise ValueError(f"{path}: line {i} has {len(row)} columns, expected {width} as "
                             f"in {ref_what}")
    bad: dict[int, list] = {}
    for i, row in split:
        for j, value in enumerate(row):
            if not _is_number(value):
                bad.setdefault(j, [0, i, value])[0] += 1
    if bad:
        j = min(bad)
        count, line, value = bad[j]
        name = "" if header is None else f" ({header[j]!r})"
        others = sorted(bad)[1:]
        more = f"; not numeric either: column index {', '.join(map(str, others))}" if others \
            else ""
        first = "an empty field" if value == "" else repr(value)
        raise ValueError(f"{path}: column index {j}{name} is not numeric: {count} value(s) "
                         f"are not numbers, the first {first} on line {line}{more}")
    return np.array([[float(v) for v in row] for _, row in split], dtype=np.float64)


_READERS = {".npy": _read_numpy, ".npz": _read_numpy, ".csv": _read_csv, ".pt": _read_torch}


# ---------------------------------------------------------------------------------------------
# the loader


def _rows(arr: np.ndarray, path: Path, image_shape) -> tuple[np.ndarray, tuple | None]:
    """``arr`` as (N, D) rows and the image shape: given, or (H, W) of an (N, H, W) array."""
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)
            or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{path}: values must be real numbers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{path} holds no data (an array of shape {arr.shape})")
    if arr.ndim < 2:
        raise ValueError(f"{path}: data must be 2-D (one row per datapoint) or 3-D (N x height "
                         f"x width images), got a {arr.ndim}-D array of shape {arr.shape}; "
                         f"save x.reshape(-1, 1) for one value per datapoint")
    if arr.ndim > 3:
        raise ValueError(f"{path}: data must be 2-D (one row per datapoint) or 3-D (N x height "
                         f"x width images), got a {arr.ndim}-D array of shape {arr.shape}")
    inferred = tuple(int(s) for s in arr.shape[1:]) if arr.ndim == 3 else None
    arr = arr.reshape(len(arr), -1)
    if image_shape is not None and image_shape[0] * image_shape[1] != arr.shape[1]:
        raise ValueError(f"{path}: image_shape {image_shape} has "
                         f"{image_shape[0] * image_shape[1]} pixels but the rows have "
                         f"{arr.shape[1]} values")
    return arr, image_shape if image_shape is not None else inferred


def _tensor(arr: np.ndarray, path: Path, lines: list[int] | None,
            dtype: torch.dtype) -> torch.Tensor:
    """``arr`` as a ``dtype`` tensor, checked to be finite in that dtype."""
    work = np.float64 if dtype == torch.float64 else np.float32
    with np.errstate(over="ignore"):
        x = torch.from_numpy(np.asarray(arr, dtype=work)).to(dtype)
    bad = ~torch.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        where = f"row index {row}" + ("" if lines is None else f" (line {lines[row]})")
        value = arr[row, col].item()
        big = f" (too large for {dtype})" if np.isfinite(value) else ""
        raise ValueError(f"{path}: {int(bad.sum())} value(s) are NaN or infinite; the first "
                         f"at {where}, column index {col}: {value!r}{big}")
    return x


def load_file(path, image_shape=None, binarize: str | None = None, seed: int = 0,
              split=(0.8, 0.1, 0.1), dtype: torch.dtype = torch.float32) -> Dataset:
    """The rows of a data file (one datapoint per row) as a :class:`Dataset`.

    The file type is read from the extension (:data:`DATA_FILE_SUFFIXES`):

    - ``.npy``: a 2-D array, or N x height x width images (flattened; ``image_shape`` is then
      taken from the file unless given);
    - ``.npz``: the array named ``x``, else ``data``, else the only array;
    - ``.csv``: numbers separated by commas or whitespace, ``#`` comments; a first row none of
      whose fields is a number is a header;
    - ``.pt``: a tensor saved with ``torch.save`` (read with ``weights_only=True``), or a dict
      holding it (``x``, ``data`` or its only entry), 2-D or 3-D as for ``.npy``.

    The values are the data (no rescaling); ``image_shape`` (``(height, width)`` or
    ``"28x28"``) says the rows are images, else ``ds.image_shape`` is None. ``split``,
    ``seed``, ``binarize`` and ``dtype`` are as in :func:`~pyro_lvm.datasets.digits` (binarizing
    needs values in [0, 1]); the labels are all 0 (a file has none).

    Errors name the file: :class:`MissingFileError` (a FileNotFoundError), an
    :class:`UnreadableFileError` (an OSError) or a ValueError for its content (an unknown
    extension, NaN or infinite values, non-numeric CSV columns, ragged rows, no data, 1-D data,
    fewer than 3 rows, an ``image_shape`` that does not fit the rows).

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "points.csv"
        >>> _ = f.write_text("a,b,c\\n" + "\\n".join(f"{i},{i + 1},{2 * i}" for i in range(10)))
        >>> ds = load_file(f, seed=0)
        >>> ds.sizes, ds.data_dim, ds.image_shape, ds.name
        ({'train': 8, 'val': 1, 'test': 1}, 3, None, 'points.csv (10 x 3)')
        >>> g = f.with_name("images.npy")
        >>> np.save(g, np.random.default_rng(0).random((20, 4, 3)))
        >>> ds = load_file(g, binarize="static")
        >>> ds.train.shape, ds.image_shape, sorted(ds.train.unique().tolist())
        (torch.Size([16, 12]), (4, 3), [0.0, 1.0])
    """
    binarize = _check_binarize(binarize)
    split = _check_split(split)
    seed = _check_seed(seed)
    dtype = _check_dtype(dtype)
    image_shape = _check_image_shape(image_shape)
    path = _check_path(path)

    arr, lines = _READERS[path.suffix.lower()](path)
    arr, image_shape = _rows(arr, path, image_shape)
    x = _tensor(arr, path, lines, dtype)
    n, d = x.shape
    if n < 3:
        raise ValueError(f"{path} holds {n} row(s); at least 3 are needed to split into "
                         f"train, validation and test")
    if binarize is not None and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"{path}: binarize={binarize!r} needs values in [0, 1] "
                         f"(probabilities), got values from {float(x.min()):g} to "
                         f"{float(x.max()):g}")
    x = _binarized(x, binarize, seed).to(dtype)
    how = {None: "", "static": ", statically binarized", "dynamic": ", binarize dynamically"}
    images = "" if image_shape is None else f", images {image_shape[0]}x{image_shape[1]}"
    return _split_dataset(x, torch.zeros(n, dtype=torch.int64), split, seed,
                          image_shape=image_shape, binarization=binarize,
                          name=f"{path.name} ({n} x {d}{images}){how[binarize]}")
