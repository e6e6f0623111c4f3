"""Rows: the data a call reads, by row index, from a tensor, a map-style Dataset or a DataLoader.

``fit``, ``evaluate_loss`` and the diagnostics read their data through :func:`as_rows`, so
that a data set that does not fit in memory is streamed: only the rows of the current
minibatch or chunk are ever materialized, and peak memory depends on the batch size, not on
the number of rows N (docs/benchmarks.md, "Streamed data"). The full-data scale N/B of a
minibatch comes from the data set's length, which is why an iterable-style data set (no
``len``) is refused.

- a tensor or array: :class:`TensorRows`, checked once (finite, non-empty) and indexed;
- a map-style ``torch.utils.data.Dataset``: :class:`DatasetRows`. An item is a row (tensor,
  array or number) or a tuple/list whose first element is the row (``(x, label)``, as
  torchvision's data sets give); ``__getitems__`` is used when the data set has it;
- a ``DataLoader``: the rows of its data set, read with its ``collate_fn``, ``num_workers``
  and ``pin_memory``. The order of the rows is the caller's (``fit`` draws its own seeded,
  checkpointed permutation); the loader's sampler is not used, its ``batch_size`` is
  ``fit``'s default and its ``drop_last`` is honoured by ``fit``.

Each batch read from a data set is checked (finite values, the row shape of the first row)
and a bad one is reported with its row indices.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate
from torch.utils.data._utils.collate import default_convert

from ._checks import as_data_tensor

__all__ = ["DatasetItemError", "DatasetRows", "Rows", "TensorRows", "as_rows"]

#: Rows of a data set (not a tensor) that :meth:`Rows.fingerprint` reads, evenly spaced with
#: the first and the last: reading a streamed data set is not free.
FINGERPRINT_ROWS = 64

#: Rows of a tensor whose fingerprint terms are computed at once (float64 copies of them).
FINGERPRINT_CHUNK = 4096


def _weighted_sum(x: torch.Tensor, idx: torch.Tensor) -> float:
    """sum_i a_i <w, x_i> in float64: w fixed pseudo-random column weights in [0.5, 1.5), a_i
    = 1 + frac(i / golden ratio) a weight of row position i: a changed value or two rows
    swapped change it (unless by a coincidence of rounding)."""
    x = x.reshape(len(x), -1).double()
    w = torch.rand(x.shape[1], generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64).to(x.device) + 0.5
    a = 1 + torch.frac(idx.to(x.device, torch.float64) * 0.6180339887498949)
    return float((x @ w * a).sum())


class Rows:
    """Rows of a data set read by index: ``len(rows)`` datapoints of shape ``row_shape``."""

    name: str
    num_data: int
    row_shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def __len__(self) -> int:
        return self.num_data

    @property
    def shape(self) -> torch.Size:
        """(N, *row_shape), as a tensor's."""
        return torch.Size((self.num_data, *self.row_shape))

    def fetch(self, idx: torch.Tensor) -> torch.Tensor:
        """The rows ``idx`` as one tensor on :attr:`device`."""
        raise NotImplementedError

    def batches(self, index_batches: Sequence[torch.Tensor], seed: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(idx, rows)`` for each index tensor in ``index_batches``, in order. ``seed``:
        the base seed of the DataLoader workers that read them (where there are workers)."""
        for idx in index_batches:
            yield idx, self.fetch(idx)

    def to(self, device) -> Rows:
        """These rows, read onto ``device``."""
        raise NotImplementedError

    def materialize(self) -> torch.Tensor:
        """Every row as one tensor (for a diagnostic that needs them all at once)."""
        return self.fetch(torch.arange(self.num_data))

    def fingerprint(self) -> float | str:
        """A cheap fingerprint of the values and their order, 12 significant digits (a
        checkpoint compares it when resumed, ranks compare it before training): of
        :data:`FINGERPRINT_ROWS` evenly spaced rows here, of every row for a tensor
        (:class:`TensorRows`). Rows that fail to read give ``"unreadable"``: the failure is
        reported where the rows are used, on every rank at once, not here on some.

        >>> x = torch.arange(6.0).reshape(3, 2)
        >>> TensorRows(x).fingerprint() == TensorRows(x[[1, 0, 2]]).fingerprint()
        False
        """
        n = self.num_data
        idx = torch.linspace(0, n - 1, min(n, FINGERPRINT_ROWS)).round().long().unique()
        try:
            rows = self.fetch(idx)
        except Exception:  # noqa: BLE001 (reported by the step that reads them)
            return "unreadable"
        return float(f"{_weighted_sum(rows, idx):.12g}")


class TensorRows(Rows):
    """Rows of an in-memory tensor (or array), checked once by ``as_data_tensor``.

    >>> rows = TensorRows(torch.arange(6.0).reshape(3, 2))
    >>> len(rows), rows.row_shape, rows.fetch(torch.tensor([2, 0])).tolist()
    (3, (2,), [[4.0, 5.0], [0.0, 1.0]])
    """

    def __init__(self, data, name: str = "data", dtype: torch.dtype | None = None):
        # detached: training never writes a gradient onto the user's data
        self.data = as_data_tensor(data, name, dtype=dtype).detach()
        self.name = name
        self.num_data = self.data.shape[0]
        self.row_shape = tuple(self.data.shape[1:])
        self.dtype, self.device = self.data.dtype, self.data.device

    def fetch(self, idx):
        return self.data[idx.to(self.device)]

    def to(self, device):
        out = TensorRows.__new__(TensorRows)
        out.__dict__.update(self.__dict__, data=self.data.to(device))
        out.device = out.data.device
        return out

    def materialize(self):
        return self.data

    def fingerprint(self):
        total = sum(_weighted_sum(self.data[a:a + FINGERPRINT_CHUNK],
                                  torch.arange(a, min(a + FINGERPRINT_CHUNK, self.num_data)))
                    for a in range(0, self.num_data, FINGERPRINT_CHUNK))
        return float(f"{total:.12g}")


class DatasetRows(Rows):
    """Rows of a map-style Dataset (or of a DataLoader's), read batch by batch.

    >>> class Squares(Dataset):
    ...     def __len__(self): return 5
    ...     def __getitem__(self, i): return torch.tensor([float(i), float(i * i)]), i % 2
    >>> rows = DatasetRows(Squares())
    >>> len(rows), rows.row_shape, rows.fetch(torch.tensor([3, 1])).tolist()
    (5, (2,), [[3.0, 9.0], [1.0, 1.0]])
    """

    def __init__(self, dataset, name: str = "data", dtype: torch.dtype | None = None,
                 loader: DataLoader | None = None):
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"{name}: an iterable-style data set ({type(dataset).__name__}) has no length "
                "and no rows by index, and pyro_lvm needs both: the length N scales each "
                "minibatch to the full data set (N/B) and the shuffled minibatches are drawn "
                "by index; give a map-style torch.utils.data.Dataset (__len__ and "
                "__getitem__), or a tensor")
        try:
            num_data = len(dataset)
        except TypeError as e:
            raise TypeError(f"{name}: the data set {type(dataset).__name__} has no len(), which "
                            "pyro_lvm needs to scale minibatches to the full data set (N/B)"
                            ) from e
        if num_data == 0:
            raise ValueError(f"{name} is empty (a data set of length 0)")
        self.dataset, self.name, self.num_data = dataset, name, int(num_data)
        custom = loader is not None and loader.collate_fn not in (None, default_collate,
                                                                  default_convert)
        self.collate = loader.collate_fn if custom else None  # None: rows stacked here
        self.num_workers = 0 if loader is None else loader.num_workers
        self.pin_memory = False if loader is None else loader.pin_memory
        # the loader's worker settings, passed on to the loaders that read the batches
        self.worker_options = {} if loader is None or not loader.num_workers else {
            "worker_init_fn": loader.worker_init_fn, "timeout": loader.timeout,
            "multiprocessing_context": loader.multiprocessing_context,
            "prefetch_factor": loader.prefetch_factor}
        self.loader_batch_size = None if loader is None else loader.batch_size
        self.drop_last = False if loader is None else loader.drop_last
        self.device = torch.device("cpu")
        self.row_shape, self.dtype = (), torch.get_default_dtype()
        first = self._read(torch.tensor([0]), check_shape=False)
        self.row_shape = tuple(first.shape[1:])
        self.dtype = dtype or first.dtype

    def _items(self, idx: list[int]) -> list:
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None:
            try:
                return list(getitems(idx))
            except Exception as e:  # a user's __getitems__ failing
                raise ValueError(f"{self.name}: reading {_where(torch.tensor(idx))} failed: "
                                 f"{type(e).__name__}: {e}") from e
        items = []
        for i in idx:
            try:
                items.append(self.dataset[i])
            except Exception as e:  # a user's __getitem__ failing: name its row
                raise ValueError(f"{self.name}: reading row {i} failed: {type(e).__name__}: "
                                 f"{e}") from e
        return items

    def _read(self, idx: torch.Tensor, check_shape: bool = True) -> torch.Tensor:
        where = _where(idx)
        items = self._items(idx.tolist())
        try:
            if self.collate is None:
                batch = torch.stack([_row(item, self.name) for item in items])
            else:
                batch = _first(self.collate(items), self.name)
        except DatasetItemError:
            raise
        except Exception as e:  # ragged rows, or a user's collate_fn failing
            raise ValueError(f"{self.name}: reading {where} failed: {type(e).__name__}: "
                             f"{e}") from e
        return self._check(batch, idx, where, check_shape)

    def _check(self, x, idx, where: str, check_shape: bool = True) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach()
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        if self.dtype is not None and check_shape:
            x = x.to(self.dtype)
        if x.dim() == 0 or x.shape[0] != len(idx):
            raise ValueError(f"{self.name}: {where} gave a batch of shape {tuple(x.shape)}, "
                             f"expected {len(idx)} rows: each item must be one row")
        if check_shape and tuple(x.shape[1:]) != self.row_shape:
            raise ValueError(f"{self.name}: {where} have shape {tuple(x.shape[1:])}, but row 0 "
                             f"has shape {self.row_shape}: every row must have the same shape")
        bad = ~torch.isfinite(x)
        if bad.any():
            row = int(idx[bad.reshape(len(idx), -1).any(1).nonzero()[0, 0]])
            raise ValueError(f"{self.name}: row {row} contains non-finite values (NaN or inf)")
        return x

    def fetch(self, idx):
        return self._read(idx.cpu()).to(self.device)

    def batches(self, index_batches, seed=None):
        index_batches = [i.cpu() for i in index_batches]
        if self.num_workers == 0:
            yield from super().batches(index_batches)
            return
        # a private generator: the workers' base seed must not be drawn from the global RNG,
        # whose stream is the model's and guide's (and the checkpoint's); ``seed`` differs
        # per epoch and rank (fit derives it from its shuffler), so a Dataset's own random
        # draws (augmentation) differ too
        loader = DataLoader(_Indexed(self, index_batches), batch_size=None, shuffle=False,
                            num_workers=self.num_workers, pin_memory=self.pin_memory,
                            generator=torch.Generator().manual_seed(0 if seed is None else seed),
                            **self.worker_options)
        for j, rows in enumerate(loader):
            yield index_batches[j], rows.to(self.device, non_blocking=self.pin_memory)

    def to(self, device):
        out = DatasetRows.__new__(DatasetRows)
        out.__dict__.update(self.__dict__, device=torch.device(device))
        return out


class _Indexed(Dataset):
    """Worker-side reading for :meth:`DatasetRows.batches`: item j is the j-th batch, read
    (and checked) in a worker process while the main process trains on the previous ones."""

    def __init__(self, rows: DatasetRows, batches: Sequence[torch.Tensor]):
        self.rows, self.batches = rows, batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, j):
        idx = self.batches[j]
        return self.rows._read(idx)


class DatasetItemError(TypeError):
    """A data set's item that is not a row nor an (x, label, ...) pair."""


def _row(item, name: str) -> torch.Tensor:
    """One item as a row: a tensor, array or number; a list or tuple of numbers (a row); or
    the first element of (x, label, ...)."""
    if isinstance(item, dict):
        raise DatasetItemError(
            f"{name}: the data set's items are dicts (keys {sorted(item)[:5]}); pyro_lvm reads "
            "rows: make __getitem__ return the row (or (x, label)), or pass a DataLoader with "
            "a collate_fn that returns the batch of rows")
    if isinstance(item, tuple | list) and item and not all(
            isinstance(v, int | float) for v in item):
        item = item[0]
    return torch.as_tensor(np.asarray(item) if not isinstance(item, torch.Tensor) else item)


def _first(batch, name: str):
    """The rows of a batch collated by a user's collate_fn: a tensor, or the first element of
    (x, label, ...)."""
    if isinstance(batch, dict):
        raise DatasetItemError(f"{name}: the collate_fn returns a dict (keys "
                               f"{sorted(batch)[:5]}); return the batch of rows, or (x, ...)")
    if isinstance(batch, tuple | list) and batch:
        return batch[0]
    return batch


def _where(idx: torch.Tensor) -> str:
    if len(idx) == 1:
        return f"row {int(idx[0])}"
    return f"rows {int(idx[0])}, {int(idx[1])}, ... ({len(idx)} rows)"


def as_rows(data, name: str = "data", dtype: torch.dtype | None = None) -> Rows:
    """``data`` as :class:`Rows`: a tensor or array (checked whole), a map-style Dataset or a
    DataLoader (read batch by batch), or Rows (returned as they are).

    >>> as_rows(np.zeros((4, 3))).shape
    torch.Size([4, 3])
    >>> loader = DataLoader(torch.utils.data.TensorDataset(torch.ones(10, 2)), batch_size=4)
    >>> rows = as_rows(loader)
    >>> len(rows), rows.loader_batch_size, rows.fetch(torch.tensor([0, 9])).shape
    (10, 4, torch.Size([2, 2]))
    """
    if isinstance(data, Rows):
        return data
    if isinstance(data, DataLoader):
        return DatasetRows(data.dataset, name, dtype, loader=data)
    if isinstance(data, Dataset):
        return DatasetRows(data, name, dtype)
    if isinstance(data, Iterable) and not isinstance(data, torch.Tensor | np.ndarray | list |
                                                     tuple):
        raise TypeError(f"{name}: {type(data).__name__} is an iterable without rows by index; "
                        "pass a tensor, a map-style torch.utils.data.Dataset or a DataLoader")
    return TensorRows(data, name, dtype)


def num_batches(num_data: int, batch_size: int, drop_last: bool = False) -> int:
    """Minibatches per epoch.

    >>> num_batches(10, 4), num_batches(10, 4, drop_last=True)
    (3, 2)
    """
    return num_data // batch_size if drop_last else math.ceil(num_data / batch_size)
