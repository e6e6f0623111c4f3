"""Effect handlers: minibatch subsampling of the data plate for models written as ``model(x)``."""

from __future__ import annotations

import contextlib

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from tqdm import tqdm

from .contract import PairError, data_frame
from .datasets.simulation import SimulatedSites, simulate  # noqa: F401 (the one simulator)
from .distributed import gather_objects, in_group, raise_together, world
from .rng import seeded

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
                    f"x.shape[0]. A guide that sizes its parameters by the plate (Pyro's "
                    f"AutoNormal, fitted on {msg['fn'].size} rows) must see all its rows at once "
                    f"(batch_size={msg['fn'].size}, or a diagnostic's batch_size/chunk_size), "
                    "or use pyro_lvm.guides.PerDatapointNormal, which indexes its parameters "
                    "by the rows"
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
               progress: bool = False, desc: str | None = None, sharded: bool = False,
               seed: int | None = None) -> list:
    """``[fn(idx) for idx in chunks]``: the rows ``0..num_data-1`` in consecutive chunks of
    ``chunk_size``, each call running inside ``minibatch(idx, num_data, data_plate)``, so that
    a diagnostic streamed over chunks sees each chunk as rows of the whole data set
    (per-datapoint parameters indexed right, local terms scaled by ``num_data / len(idx)``).
    ``progress`` shows a tqdm bar labelled ``desc``. ``sharded``: see :func:`map_batches`.

    >>> import pyro, pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", dist.Normal(0., 1.), obs=x)
    >>> x = torch.zeros(5)
    >>> map_chunks(lambda idx: pyro.poutine.trace(model).get_trace(x[idx]).nodes["x"]["scale"],
    ...            num_data=5, chunk_size=2)
    [2.5, 2.5, 5.0]
    """
    batches = [torch.arange(start, min(start + chunk_size, num_data), device=device)
               for start in range(0, num_data, chunk_size)]
    return map_batches(fn, batches, num_data, data_plate, progress, desc, sharded, seed)


def map_batches(fn, batches, num_data: int | None, data_plate: str = "data",
                progress: bool = False, desc: str | None = None, sharded: bool = False,
                seed: int | None = None) -> list:
    """``[fn(idx) for idx in batches]``, each call inside ``minibatch(idx, num_data,
    data_plate)`` (``num_data=None``: no handler; ``fn`` sets its own).

    ``sharded=True`` under an initialized torch.distributed process group (``torchrun``):
    batch j runs on rank ``j % world_size`` only, with torch's RNG seeded by ``(seed, j)``,
    and the results (which must be picklable; their tensors come back on the CPU) are
    gathered so that every rank returns the whole list in order. The draws of a batch then
    depend on its index alone, not on the number of processes: the result is the same with
    1, 2 or W processes. Without a group
    nothing changes: the batches draw one after the other from the stream as it stands.
    (tests/test_distributed.py compares 1 and 2 gloo processes.)

    >>> map_batches(len, [torch.arange(3), torch.arange(2)], num_data=5)
    [3, 2]
    """
    group = sharded and in_group()
    rank, size = world() if group else (0, 1)
    if group and seed is None:  # one base seed for every rank: rank 0's draw
        seed = gather_objects(int(torch.randint(2**62, ())), desc or "map_batches",
                              "the seed")[0]
    out = []
    bar = tqdm(total=len(batches), desc=desc, disable=not progress or rank != 0, leave=False,
               dynamic_ncols=True)
    failure = None
    with bar:
        for j, idx in enumerate(batches):
            if j % size == rank:
                handler = (minibatch(idx, num_data, data_plate) if num_data is not None
                           else contextlib.nullcontext())
                try:
                    with handler, seeded((seed * 1_000_003 + j) % 2**63 if group else None,
                                         devices=None):
                        out.append(fn(idx))
                except Exception as e:
                    if not group:
                        raise
                    failure = e  # raised on every rank below, not here alone
                    break
            bar.update(1)
    if not group:
        return out
    raise_together(desc or "map_batches", failure)
    shares = gather_objects(_to_cpu(out), desc or "map_batches",
                            "each rank's share of the batches")
    return [shares[j % size][j // size] for j in range(len(batches))]


def _to_cpu(obj):
    """Tensors (in lists, tuples and dicts) moved to the CPU: gathered objects are pickled, and
    a CUDA tensor would come back on the sender's device, not the receiver's."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj
