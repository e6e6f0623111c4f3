"""Effect handlers: minibatch subsampling of the data plate for models written as ``model(x)``."""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from tqdm import tqdm

from .contract import PairError, data_frame
from .datasets.simulation import SimulatedSites, simulate  # noqa: F401 (the one simulator)

_ACTIVE: list[minibatch] = []


class minibatch(Messenger):
    """Treat ``pyro.plate(data_plate, len(x))`` in a plain ``model(x)`` as a minibatch of data.

    Inside this handler, a model or guide called on the rows ``indices`` of a data set of
    ``num_data`` points sees the plate's subsample indices equal to ``indices`` (so
    per-datapoint parameters can be indexed by them), and every site inside the data plate
    has its log-density scaled by ``num_data / len(indices)``: the usual unbiased minibatch
    estimate of the full-data objective (Hoffman et al. 2013). Sites outside the plate
    (global latents and parameters) are not scaled.

    In a data-parallel run each process holds a share of a global minibatch of
    ``batch_size`` rows: its plate sites are scaled by ``num_data / batch_size`` and its
    other sites by ``share`` (1 / the number of processes), so that the sum over processes
    is the single-process estimate (:mod:`pyro_lvm.distributed`).

    >>> import pyro, pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", dist.Normal(0., 1.), obs=x)
    >>> with minibatch(torch.tensor([3, 7]), num_data=10):
    ...     tr = pyro.poutine.trace(model).get_trace(torch.zeros(2))
    >>> tr.nodes["x"]["scale"]
    5.0
    """

    def __init__(self, indices: torch.Tensor, num_data: int, data_plate: str = "data",
                 batch_size: int | None = None, share: float = 1.0):
        super().__init__()
        self.indices = torch.as_tensor(indices)
        self.num_data = int(num_data)
        self.data_plate = data_plate
        self.scale = self.num_data / (len(self.indices) if batch_size is None else batch_size)
        self.share = share
        self.plate_seen = False

    def __enter__(self):
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *args):
        _ACTIVE.remove(self)
        return super().__exit__(*args)

    def _process_message(self, msg):
        if msg["name"] == self.data_plate and isinstance(msg["fn"], _Subsample):
            own = msg["fn"].subsample_size
            if own is not None and own != msg["fn"].size and own != len(self.indices):
                raise PairError(
                    f"pyro.plate({self.data_plate!r}, {msg['fn'].size}, subsample_size={own}) "
                    "subsamples itself, while pyro_lvm hands the program its rows (all of them "
                    "for a diagnostic, a minibatch in fit): drop subsample_size and pass the "
                    "rows as x (fit(batch_size=...) draws the minibatches)")
            if msg["fn"].size != len(self.indices):
                raise ValueError(
                    f"pyro.plate({self.data_plate!r}, {msg['fn'].size}) does not match the "
                    f"minibatch of {len(self.indices)} rows: the data plate's size must be "
                    f"x.shape[0]"
                )
            msg["value"] = self.indices.to(msg["fn"].device)
            self.plate_seen = True
            return
        if msg["type"] == "sample":
            if data_frame(msg, self.data_plate) is not None:
                msg["scale"] = msg["scale"] * self.scale
            elif self.share != 1.0:
                msg["scale"] = msg["scale"] * self.share


def current_minibatch(data_plate: str = "data") -> minibatch | None:
    """The innermost active :class:`minibatch` handler for ``data_plate``, or None.

    >>> current_minibatch() is None
    True
    """
    for handler in reversed(_ACTIVE):
        if handler.data_plate == data_plate:
            return handler
    return None


def map_chunks(fn, num_data: int, chunk_size: int, device=None, data_plate: str = "data",
               progress: bool = False, desc: str | None = None) -> list:
    """``[fn(idx) for idx in chunks]``: the rows ``0..num_data-1`` in consecutive chunks of
    ``chunk_size``, each call running inside ``minibatch(idx, num_data, data_plate)``, so that
    a diagnostic streamed over chunks sees each chunk as rows of the whole data set
    (per-datapoint parameters indexed right, local terms scaled by ``num_data / len(idx)``).
    ``progress`` shows a tqdm bar labelled ``desc``.

    >>> import pyro, pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", dist.Normal(0., 1.), obs=x)
    >>> x = torch.zeros(5)
    >>> map_chunks(lambda idx: pyro.poutine.trace(model).get_trace(x[idx]).nodes["x"]["scale"],
    ...            num_data=5, chunk_size=2)
    [2.5, 2.5, 5.0]
    """
    starts = range(0, num_data, chunk_size)
    out = []
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        idx = torch.arange(start, min(start + chunk_size, num_data), device=device)
        with minibatch(idx, num_data, data_plate):
            out.append(fn(idx))
    return out
