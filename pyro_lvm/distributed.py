"""Data-parallel runs on torch.distributed: who this process is, and the collectives pyro_lvm
uses (gloo on CPUs, NCCL on GPUs; launched with ``torchrun``).

pyro_lvm never starts a process group itself: a script run under ``torchrun`` calls
``torch.distributed.init_process_group(...)`` and every pyro_lvm call that follows notices it
(:func:`world`). With one process, or without a group, every function here is a no-op, and
the results are those of a plain run.

What is combined, and how (one home for it):

- ``fit``: each rank reads its share of every global minibatch (the rows ``idx[rank::W]`` of
  the same seeded permutation on every rank), scales its data-plate terms by N/B with B the
  *global* batch size and its other terms by 1/W, so that the sum over ranks is the
  single-process estimate; the gradients and the loss are summed across ranks
  (:func:`all_reduce_sum_`) before the optimizer step, which every rank then takes alike.
- before the first step, :func:`agree` compares what every rank was given (data length,
  batch size, objective, parameter names, shapes and values) and raises one clear error on
  every rank when they differ, instead of a hang or a silent divergence.
- a collective that fails (a rank died, or timed out) raises :class:`DistributedError`
  naming the ranks that no longer answer (:func:`collective`); the timeout is the process
  group's (``init_process_group(timeout=...)``).
"""

from __future__ import annotations

import contextlib
import datetime
import re
from collections.abc import Iterator, Sequence

import torch

__all__ = ["DistributedError", "agree", "all_reduce_sum_", "collective", "gather_objects",
           "in_group", "raise_together", "shard", "world"]


class DistributedError(RuntimeError):
    """Ranks that disagree, or a rank that stopped answering."""


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group.

    >>> world()
    (0, 1)
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def in_group() -> bool:
    """Whether a torch.distributed process group is initialized (of any size, one included):
    the sharded diagnostics then seed each chunk by its index (:func:`pyro_lvm.handlers.
    map_batches`), so that their numbers do not depend on the number of processes.

    >>> in_group()
    False
    """
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def shard(idx: torch.Tensor, rank: int | None = None, size: int | None = None) -> torch.Tensor:
    """This rank's rows of a global minibatch: ``idx[rank::world_size]``.

    >>> shard(torch.arange(7), rank=1, size=2).tolist()
    [1, 3, 5]
    """
    if rank is None or size is None:
        rank, size = world()
    return idx[rank::size]


@contextlib.contextmanager
def collective(call: str, what: str) -> Iterator[None]:
    """Run collectives; a failure becomes a :class:`DistributedError` naming ``call``,
    ``what`` was being combined, and the ranks that no longer answer (found with a
    ``monitored_barrier`` when the backend has one)."""
    try:
        yield
    except DistributedError:
        raise
    except (RuntimeError, ValueError) as e:
        rank, size = world()
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.split(". This is typically")[0]  # gloo's advice, not about this run
        raise DistributedError(
            f"{call}: combining {what} across {size} processes failed on rank {rank}: "
            f"{first}. {_missing_ranks()}Every rank stops; rerun, resuming from the last "
            "checkpoint (fit(..., checkpoint=..., resume=True)).") from e


def _missing_ranks() -> str:
    """Which ranks no longer answer: a ``monitored_barrier`` (gloo) names the ones that miss
    it; when it fails on a broken connection instead, with two processes it is the other."""
    dist = torch.distributed
    rank, size = world()
    try:
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=5), wait_all_ranks=True)
    except RuntimeError as e:
        text = str(e)
        named = sorted({int(r) for r in re.findall(r"[Rr]ank (\d+)", text)} - {rank})
        if not named and size == 2:
            named = [1 - rank]
        where = f"rank {', '.join(map(str, named))}" if named else "another rank"
        return f"{where} stopped answering (it died or hung). "
    except Exception:  # noqa: BLE001 (a backend without monitored_barrier, e.g. NCCL)
        return ""
    return ""


def gather_objects(obj, call: str, what: str) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` without a group)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out = [None] * size
    with collective(call, what):
        torch.distributed.all_gather_object(out, obj)
    return out


def raise_together(call: str, failure: BaseException | None) -> None:
    """Every rank learns whether any rank failed, and then all raise: the failing rank its
    own error, the others a :class:`DistributedError` with its rank and message. Without a
    process group, ``failure`` is simply raised. (A rank that raised alone would leave the
    others waiting in their next collective, or pair it with the wrong one.)

    >>> raise_together("fit", None)  # one process, nothing failed
    """
    if world()[1] == 1:
        if failure is not None:
            raise failure
        return
    messages = gather_objects(None if failure is None else f"{type(failure).__name__}: "
                              f"{failure}", call, "whether each rank succeeded")
    if failure is not None:
        raise failure
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        raise DistributedError(f"{call} failed on rank {failed[0][0]}: {failed[0][1]}; every "
                               "rank stops")


def agree(call: str, facts: dict) -> None:
    """Raise :class:`DistributedError` on every rank unless every rank has the same
    ``facts`` (plain values: lengths, shapes, names, checksums).

    >>> agree("fit", {"num_data": 100})  # one process: nothing to compare
    """
    gathered = gather_objects(facts, call, "the settings of each rank")
    for key in facts:
        values = [g.get(key) for g in gathered]
        if any(v != values[0] for v in values[1:]):
            per_rank = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            raise DistributedError(
                f"{call}: the {len(values)} processes disagree on {key} ({per_rank}); every "
                "rank must run the same script on the same data set with the same model, "
                "guide, objective and seed (and initialize the same parameters)")


def all_reduce_sum_(tensors: Sequence[torch.Tensor], call: str, what: str) -> None:
    """Sum ``tensors`` across ranks, in place: one flat all-reduce per dtype and device."""
    if world()[1] == 1 or not tensors:
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    with collective(call, what):
        for group in groups.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            torch.distributed.all_reduce(flat)
            offset = 0
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()
