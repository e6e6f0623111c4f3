"""The fit loop: minibatch SVI with validation, early stopping, checkpoints and safe stopping.

Minibatches of a model written as ``model(x)`` are scaled to the full data set by the
:class:`~pyro_lvm.handlers.minibatch` handler (sites in the data plate times N/B, global sites
untouched), so an ELBO whose loss is a sum of site terms (Trace_ELBO and its relatives, and
pyro_lvm's importance-weighted objectives) gives an unbiased estimate of its full-data loss.
Pyro's RenyiELBO puts that scale inside its logsumexp and is refused with minibatches.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.util import zero_grads
from pyro.optim import PyroOptim
from pyro.optim.lr_scheduler import PyroLRScheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau
from tqdm import tqdm

from .._checks import check_positive_int
from ..contract import (
    USER_ERRORS,
    PairError,
    eval_mode,
    pair_sites,
    program_owner,
    refuse_fixed_size,
    reporting_user_errors,
    rows_for,
    trial,
    user_error,
)
from ..distributed import (
    agree,
    all_reduce_sum_,
    gather_objects,
    raise_together,
    shard,
    world,
)
from ..handlers import map_chunks, minibatch
from ..rng import generator, seeded
from ..rows import Rows, as_rows, num_batches
from .checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .history import History
from .optimizer import FusedOptimizer
from .particles import may_skip_checks, unchecked


class TrainingDivergedError(FloatingPointError):
    """Training hit a non-finite loss or gradient, or a distribution parameter went invalid.

    The parameters are restored to their values at the previous step, the last one whose loss
    and gradients were finite; ``history`` holds the epochs completed so far.
    """

    def __init__(self, message: str, step: int, epoch: int, history: History):
        super().__init__(message)
        self.step, self.epoch, self.history = step, epoch, history


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C): the parameters are those after the last completed
    step (a step cut short is undone), no gradient is left on them, and ``history`` holds the
    epochs completed so far. With checkpoints on, the last checkpoint written (every
    ``checkpoint_every`` epochs) resumes the run exactly. A KeyboardInterrupt, so code that
    catches those still does."""

    def __init__(self, message: str, step: int, epoch: int, history: History):
        super().__init__(message)
        self.step, self.epoch, self.history = step, epoch, history


def _resolve_device(device, data) -> torch.device:
    if device is None:
        return data.device
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available")
    return device


def _check_loss(loss, call: str = "fit"):
    if loss is None:
        return Trace_ELBO()
    name = type(loss).__name__
    if name.startswith("Jit"):
        raise ValueError(
            f"{call}: {name} compiles the model and guide on their first call, including the "
            "minibatch's row indices and its N/B scale, and replays that graph afterwards: "
            "every later minibatch would be evaluated with the first one's rows and scale (a "
            f"per-datapoint guide would read the wrong rows). Use {name[3:]} instead (on torch "
            "2.13 the JIT gains no speed inside Pyro)")
    if not (callable(getattr(loss, "loss_and_grads", None)) and callable(getattr(loss, "loss",
                                                                                 None))):
        raise TypeError(
            f"loss must be a Pyro ELBO (with .loss and .loss_and_grads), got {type(loss).__name__}"
        )
    return loss


def _check_minibatch_loss(loss, batch_size: int, num_data: int) -> None:
    """RenyiELBO scales minibatch sites inside its logsumexp: a wrong value, not noise (and
    on W processes its per-shard logsumexps do not add up to the single-process one)."""
    from pyro.infer import RenyiELBO

    if isinstance(loss, RenyiELBO) and (batch_size < num_data or world()[1] > 1):
        raise ValueError(
            "RenyiELBO is biased under minibatches and across processes (the subsample scale "
            "ends up inside its logsumexp); use pyro_lvm.infer.IWAE / ImportanceWeightedELBO, "
            "or batch_size=None in one process")


def _check_val_data(val_data, data: Rows) -> Rows | None:
    if val_data is None:
        return None
    val = as_rows(val_data, "val_data", dtype=data.dtype).to(data.device)
    if val.row_shape != data.row_shape:
        raise ValueError(
            f"val_data rows have shape {val.row_shape} but data rows have shape "
            f"{data.row_shape}"
        )
    return val


def evaluate_loss(model, guide, data, loss=None, batch_size: int = 1024, seed: int | None = 0,
                  data_plate: str = "data") -> float:
    """The loss per datapoint of ``loss`` (default ``Trace_ELBO``) on ``data``, in chunks, with
    every nn.Module in eval mode (no dropout; BatchNorm's running statistics, unchanged).
    ``data`` is a tensor, a map-style Dataset or a DataLoader (:func:`pyro_lvm.rows.as_rows`:
    read chunk by chunk). Under a process group (``torchrun``) each rank evaluates every
    W-th chunk (:func:`~pyro_lvm.handlers.map_chunks` with ``sharded=True``) and every rank
    returns the same number, whatever the number of processes.

    Each chunk runs under the minibatch handler and is weighted by its share of the data,
    which adds up local terms exactly and counts global terms once. With ``seed`` the random
    draws are fixed (common random numbers across calls) and the global RNG is left untouched.

    Example:
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> x = ppca.sample(50)
        >>> exact = -ppca.log_likelihood(x).mean().item()
        >>> abs(evaluate_loss(ppca.model, ppca.exact_posterior, x) - exact) < 1e-4
        True
    """
    loss = _check_loss(loss, "evaluate_loss")
    rows = rows_for(data, model, guide)
    batch_size = check_positive_int(batch_size, "batch_size")
    return _mean_loss(model, guide, rows, loss, batch_size, seed, data_plate, check=True)


def _mean_loss(model, guide, rows: Rows, loss, batch_size: int, seed, data_plate: str,
               check: bool) -> float:
    """:func:`evaluate_loss` on checked arguments; ``check``: check the pair's sites on the
    first chunk (fit's validation loss does not: its first step has)."""
    n = len(rows)
    _check_minibatch_loss(loss, batch_size, n)
    checked = [not check]

    def one_chunk(idx):
        where = f"evaluate_loss (rows {int(idx[0])}..{int(idx[-1])})"
        batch = rows.fetch(idx)
        if not checked[0]:
            check_pair_sites(model, guide, batch, n, "evaluate_loss", data_plate)
            checked[0] = True
        with reporting_user_errors(where, loss):
            return float(loss.loss(model, guide, batch)) * len(idx) / n

    devices = [rows.device] if rows.device.type == "cuda" else []
    with seeded(seed, devices), torch.no_grad(), eval_mode():
        total = sum(map_chunks(one_chunk, n, batch_size, rows.device, data_plate,
                               sharded=True, seed=seed), 0.0)
    return total / n


def check_pair_sites(model, guide, batch, num_data: int, call: str,
                     data_plate: str = "data") -> None:
    """Once, on the first batch, whatever the loss, refuse what would train or evaluate a
    wrong bound without an error, naming the site:

    - guide sites the model does not have (Pyro's ELBOs only warn, and not at all for a site
      marked ``is_auxiliary``);
    - a Pyro AutoGuide with per-datapoint sites on a batch of fewer rows than the data: its
      parameters are sized by the data plate's size, the batch's, so every batch would
      reuse the same posteriors by position.

    A pair whose sites cannot be classified is left to the loss, which reports its own errors.

    >>> import pyro, pyro.distributions as dist
    >>> def model(x):
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("x", dist.Normal(pyro.sample("z", dist.Normal(0., 1.)), 1.), obs=x)
    >>> def guide(x):
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("z", dist.Normal(0., 1.))
    ...         pyro.sample("extra", dist.Normal(0., 1.))
    >>> check_pair_sites(model, guide, torch.zeros(3), 3, "fit")
    Traceback (most recent call last):
    ...
    pyro_lvm.contract.PairError: fit: guide site 'extra' is not a latent site of the model: ...
    """
    try:
        sites = pair_sites(model, guide, (batch,), data_plate=data_plate, call=call)
    except Exception:  # noqa: BLE001 (the loss's own step reports what is wrong)
        return
    sites.refuse_extra(call, data_plate)
    refuse_fixed_size(guide, len(batch), num_data, call, data_plate, sites.local_latents)


def _param_state(pair: set | None = None) -> dict[str, torch.Tensor]:
    """The values of the pair's parameters (every parameter in the store if ``pair`` is
    None): another model's parameters in the store are not part of this run."""
    return {name: p.detach().clone() for name, p in pyro.get_param_store().named_parameters()
            if pair is None or p in pair}


def _shapes(pair: set) -> dict[str, tuple]:
    store = pyro.get_param_store()
    return dict(sorted((store.param_name(p), tuple(p.shape)) for p in pair))


@torch.no_grad()
def _load_param_state(state: dict[str, torch.Tensor], source: str,
                      partial: bool = False) -> None:
    """Overwrite the store's parameters with ``state``'s; ``partial``: those the model does
    not declare, or declares with another shape, are left out (with a warning naming them)."""
    current = dict(pyro.get_param_store().named_parameters())
    skipped = [name for name, value in state.items()
               if name not in current or current[name].shape != value.shape]
    if partial and skipped:
        warnings.warn(f"{source}: parameters {skipped} are not the model's (or have another "
                      "shape) and are not loaded", stacklevel=3)
        state = {k: v for k, v in state.items() if k not in skipped}
    for name, value in state.items():
        if name not in current:
            raise CheckpointError(
                f"{source} has parameter {name!r}, which the model and guide do not declare "
                f"(they declare {sorted(current)}): it was written for another model"
            )
        if current[name].shape != value.shape:
            raise CheckpointError(
                f"{source}: parameter {name!r} has shape {tuple(value.shape)} but the model "
                f"declares shape {tuple(current[name].shape)}"
            )
        current[name].copy_(value)


def fit(model, guide, data, loss=None, optimizer: PyroOptim | None = None, epochs: int = 10,
        batch_size: int | None | str = "auto", val_data=None, patience: int | None = None,
        restore_best: bool | None = None, seed: int | None = 0, device=None,
        checkpoint: str | Path | None = None, checkpoint_every: int = 1,
        resume: bool | str = False,
        data_plate: str = "data", progress: bool = True, desc: str = "fit",
        callbacks: Iterable[Callable[[int, History], None]] = (),
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> History:
    """Fit ``model``/``guide`` to ``data`` by stochastic variational inference.

    Args:
        model, guide: Pyro programs ``f(x)`` (functions, nn.Modules or bound methods) whose
            local sites live in ``pyro.plate(data_plate, x.shape[0])``.
        data: one row per datapoint: a tensor or array (checked: non-empty, finite), a
            map-style ``torch.utils.data.Dataset`` or a ``DataLoader``, streamed minibatch
            by minibatch (:mod:`pyro_lvm.rows`: memory bounded by the batch size; the
            shuffled order is fit's own, seeded and checkpointed; a loader's ``collate_fn``,
            ``num_workers``, ``pin_memory`` and ``drop_last`` are used, its sampler is not).
        loss: any Pyro ELBO (default ``Trace_ELBO()``); minibatches are scaled by N/B on the
            data plate only, so the step loss is an unbiased estimate of the full-data loss.
            Whatever the loss, the first step checks the pair's sites once
            (:func:`check_pair_sites`: a guide site the model lacks, or a Pyro AutoGuide on
            minibatches, is refused by name before any update).
        optimizer: a ``pyro.optim`` optimizer (default ``Adam({"lr": 1e-3})``). One of
            torch.optim's with one set of arguments is stepped as a single torch optimizer
            over all parameters (:class:`~pyro_lvm.infer.FusedOptimizer`: the same updates,
            less overhead), and its state is handed back to ``optimizer`` at the end. A
            ``pyro.optim`` scheduler is stepped once per epoch (``ReduceLROnPlateau`` with the
            validation loss, or the train loss without validation data).
        epochs: total number of epochs (a resumed run continues up to this number).
        batch_size: minibatch size; None means full batch; "auto" (default): a DataLoader's
            batch size, else 128. Under ``torchrun`` it is the *global* batch size: each of
            the W processes reads every W-th row of it (:mod:`pyro_lvm.distributed`).
        val_data: evaluated every epoch with fixed random draws; enables early stopping.
            The same kinds as ``data``.
        patience: stop after this many epochs without a better validation loss.
        restore_best: end with the parameters of the epoch that had the best validation
            loss (``history.best_epoch``) rather than those of the last epoch. Default: only
            when early stopping (``patience``) is on. ``history.params_epoch`` tells which.
        seed: seeds torch, NumPy, Python and the shuffler (``pyro.set_rng_seed``).
        device: "cpu", "cuda", ... (default: the data's device); nn.Module owners are moved.
        checkpoint: file written atomically every ``checkpoint_every`` epochs and at the end.
        resume: continue from ``checkpoint`` if it exists; the result is identical to an
            uninterrupted run with the same arguments. The checkpoint records the run (the
            optimizer and its arguments, batch size, number of rows and a fingerprint of the
            data, seed, objective, the names and shapes of the pair's parameters): resuming
            with any of these changed is an error listing the changes, unless
            ``resume="override"``, which continues with the new values (a new learning
            rate, seed or batch size is used; parameters missing from the checkpoint keep
            their initial values, with a warning naming them).
        callbacks: ``f(epoch, history)`` called after each epoch, on every rank under
            torchrun (they must be the same on every rank: a callback that changes training,
            or calls a diagnostic, does so everywhere; one that writes files should check
            ``pyro_lvm.distributed.world()[0] == 0``, as the tracking callbacks do).
        transform: applied to every training minibatch as it is drawn, e.g.
            ``pyro_lvm.datasets.dynamic_binarize`` (a fresh binarization each time, Burda et
            al. 2016); validation data are used as given.

    Data-parallel training: run the same script under ``torchrun --nproc_per_node=W`` after
    ``torch.distributed.init_process_group(...)``; fit notices the group, checks that every
    rank was given the same data length, settings and initial parameters, shards each global
    minibatch across the ranks, sums the gradients of every parameter before each optimizer
    step, and reduces the losses so that history and early stopping agree on every rank.
    Only rank 0 writes the checkpoint; ``resume`` works under torchrun (every rank reads it).
    An error on one rank (bad data, a model error, a non-finite loss) stops every rank at the
    same step, with the failing rank's message.

    Returns:
        A :class:`History`. A non-finite loss or gradient, or an invalid distribution
        parameter, raises :class:`TrainingDivergedError` naming the step; the parameters are
        restored to those of the previous step (the last with a finite loss and gradients).

    Example:
        >>> import pyro
        >>> from pyro_lvm.models import PPCA
        >>> torch.manual_seed(0) and None
        >>> x = PPCA(5, 2).sample(200)
        >>> ppca = PPCA(5, 2)
        >>> h = fit(ppca.model, ppca.guide, x, optimizer=pyro.optim.Adam({"lr": 0.05}),
        ...         epochs=3, batch_size=50, progress=False)
        >>> len(h.train_loss)
        3
    """
    rows = as_rows(data, "data")
    epochs = check_positive_int(epochs, "epochs")
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    n = len(rows)
    if batch_size == "auto":
        batch_size = getattr(rows, "loader_batch_size", None) or 128
        if batch_size == 1:
            warnings.warn("fit: the DataLoader's batch size is 1 (DataLoader's default), so "
                          "every step reads one row; pass batch_size= to fit or to the "
                          "DataLoader", stacklevel=2)
    batch_size = n if batch_size is None else min(check_positive_int(batch_size, "batch_size"), n)
    drop_last = bool(getattr(rows, "drop_last", False)) and batch_size < n
    rank, size = world()
    if batch_size < size:
        raise ValueError(f"fit: batch_size {batch_size} is smaller than the {size} processes of "
                         "the process group: each needs at least one row of every minibatch")
    if patience is not None:
        patience = check_positive_int(patience, "patience")
        if val_data is None:
            raise ValueError("patience (early stopping) needs val_data")
    if resume not in (True, False, "override"):
        raise ValueError(f"resume must be True, False or 'override', got {resume!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if checkpoint is not None:  # before training, not when the first epoch is written
        _check_checkpoint_path(Path(checkpoint))
    loss = _check_loss(loss)
    _check_minibatch_loss(loss, batch_size, n)
    if optimizer is None:
        optimizer = pyro.optim.Adam({"lr": 1e-3})
    elif not isinstance(optimizer, PyroOptim):
        raise TypeError(
            f"optimizer must be a pyro.optim optimizer (e.g. pyro.optim.Adam({{'lr': 1e-3}})), "
            f"got {type(optimizer).__name__}"
        )
    scheduler = isinstance(optimizer, PyroLRScheduler)
    if scheduler and checkpoint is not None:
        raise ValueError(
            "checkpoints cannot hold the state of a pyro.optim learning-rate scheduler (Pyro's "
            "wrapper exposes only the scheduler's state, not its optimizer's, so a resumed run "
            "would differ); for a decaying rate with checkpoints use "
            "pyro.optim.ClippedAdam({'lr': ..., 'lrd': ...})"
        )
    # one torch optimizer over all parameters when that gives the same updates
    stepper = (FusedOptimizer.taking_over(optimizer) if FusedOptimizer.eligible(optimizer)
               else optimizer)
    device = _resolve_device(device, rows)
    rows = rows.to(device)
    val = _check_val_data(val_data, rows)
    owners = (program_owner(model), program_owner(guide))
    for owner in {id(o): o for o in owners if o is not None}.values():
        owner.to(device)
    steps_per_epoch = num_batches(n, batch_size, drop_last)
    if size > 1:  # before any other collective: the settings that decide which ones run
        _agree_on_settings(loss, rows, batch_size, seed, epochs, steps_per_epoch, val,
                           checkpoint, checkpoint_every, patience, resume)

    if seed is not None:
        pyro.set_rng_seed(seed)
    shuffle = generator(seed)  # seed=None: drawn from the global RNG, like every other draw
    if size > 1 and seed is None:  # the same global minibatches on every rank: rank 0's
        shuffle.manual_seed(gather_objects(shuffle.initial_seed(), "fit", "the shuffle seed")[0])
    history = History()
    seen: set[torch.Tensor] = set()  # the pair's parameters (those its steps read)
    # what a checkpoint records (its data fingerprint reads rows: only when there is one)
    record = _run_record(optimizer, loss, rows, batch_size, seed, size) if checkpoint else {}
    best_params = None  # the parameters of history.best_epoch
    start_epoch = 0
    resuming = resume and Path(checkpoint).exists()
    failure = None
    try:
        if resuming or size > 1:
            # Run model and guide once so that every parameter exists (to be overwritten
            # from the checkpoint, or compared across ranks before the first step).
            with trial(), poutine.trace(param_only=True) as declared:
                idx = shard(torch.arange(batch_size, device=device), rank, size)
                x = rows.fetch(idx)
                with minibatch(idx, n, data_plate, batch_size, 1.0 / size) as mb:
                    guide_trace = poutine.trace(guide).get_trace(x)
                    poutine.replay(model, trace=guide_trace)(x)
            seen.update(site["value"].unconstrained() for site in declared.trace.nodes.values())
            if not mb.plate_seen and (batch_size < n or size > 1):
                raise ValueError(_NO_PLATE.format(data_plate=data_plate))
        if resuming:
            state = _read_checkpoint(checkpoint, size)
            changes = _changes(state, record, _shapes(seen))
            if changes and resume != "override":
                raise CheckpointError(
                    f"checkpoint {checkpoint} was written by a different run: "
                    + "; ".join(changes) + ". Resume with the arguments it was written with, "
                    "or pass resume='override' to continue with the new values")
    except Exception as e:  # noqa: BLE001 (raised on every rank, or here alone)
        failure = e
    raise_together("fit", failure)
    if resuming:
        override = resume == "override" and bool(changes)
        _load_param_state(state["params"], f"checkpoint {checkpoint}", partial=override)
        stepper.set_state(state["optimizer"] if not override
                          else _with_arguments(state["optimizer"], optimizer))
        history = History.from_dict(state["history"])
        best_params = state["best_params"]
        start_epoch = int(state["epoch"])
        set_rng_state(state["rng"] if size == 1 else state["rng_per_rank"][rank], shuffle)
        saved_seed = (state["fit"].get("record") or {}).get("seed", seed)
        if override and seed is not None and saved_seed != seed:  # the new seed is used
            pyro.set_rng_seed(rank_seed(seed, rank))
            shuffle.manual_seed(seed)
    if size > 1:
        _agree_on_parameters(start_epoch)
        if not resuming:
            # each rank its own draws (rank 0 those of a single process with this seed); the
            # shuffler, seeded alike on every rank, keeps the global minibatches the same
            base = shuffle.initial_seed() if seed is None else seed
            pyro.set_rng_seed(rank_seed(base, rank))

    def write_checkpoint(epoch: int, position: dict | None = None, rng=None) -> None:
        rng = get_rng_state(shuffle) if rng is None else rng
        per_rank = gather_objects(rng, "fit", "the random states for the checkpoint")
        if rank != 0:
            return
        save_checkpoint({
            "epoch": epoch,
            "params": _param_state(seen),
            "optimizer": stepper.get_state(),
            "history": history.to_dict(),
            "best_params": best_params,
            "rng": rng,
            "rng_per_rank": per_rank if size > 1 else None,
            "position": position,  # where in the next epoch an interrupted run stopped
            "fit": {"num_data": n, "batch_size": batch_size, "epochs": epochs,
                    "world_size": size, "record": {**record, "params": _shapes(seen)}},
        }, checkpoint)

    if checkpoint is not None and transform is not None:
        _check_transform_replays(transform, rows.fetch(torch.arange(min(n, batch_size),
                                                                    device=device)))
    last_good = _LastGoodState()
    checked = False  # whether a step has run with Pyro's validation (once is enough)
    updating, epoch = False, start_epoch
    in_epoch, done, running, epoch_start, snapshot = False, 0, 0.0, None, None
    position = state.get("position") if resuming else None
    progress = progress and rank == 0
    bar = tqdm(total=(epochs - start_epoch) * steps_per_epoch, desc=desc, disable=not progress,
               leave=False, dynamic_ncols=True)
    epochs_since_best = (0 if history.best_epoch is None
                         else len(history.epoch) - history.epoch.index(history.best_epoch) - 1)
    if patience is not None and epochs_since_best >= patience:
        start_epoch = epochs  # the checkpointed run had already stopped early
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            t0 = time.perf_counter()
            if position is not None and position["epoch"] == epoch:  # an interrupted epoch
                epoch_start, done, running = (position["shuffle"], position["batch"],
                                              position["running"])
                again = torch.Generator()
                again.set_state(epoch_start)  # the epoch's order, drawn again
                perm, position = torch.randperm(n, generator=again).to(device), None
            else:
                epoch_start, done, running = shuffle.get_state(), 0, 0.0
                perm = torch.randperm(n, generator=shuffle).to(device)
            global_batches = [perm[start:start + batch_size]
                              for start in range(0, steps_per_epoch * batch_size, batch_size)]
            local = [shard(g, rank, size) for g in global_batches]
            worker_seed = rank_seed(shuffle.initial_seed() * 1009 + epoch, rank)
            in_epoch, snapshot = True, get_rng_state(shuffle) if checkpoint is not None else None
            with contextlib.closing(rows.batches(local[done:], seed=worker_seed)) as reading:
                for b, idx in enumerate(local[done:], start=done):
                    step = history.num_steps + 1
                    global_size = len(global_batches[b])
                    share = 1.0 / min(size, global_size)  # ranks with rows in this batch
                    step_loss, params, failure, x = 0.0, set(), None, None
                    try:
                        _, x = next(reading)  # a data error is reported as it is
                    except Exception as e:  # noqa: BLE001 (re-raised, on every rank)
                        failure = cause = e
                    if failure is None and len(idx):
                        try:
                            # the first step runs Pyro's checks; later ones check the data only
                            checks = (unchecked("fit") if may_skip_checks(checked)
                                      else contextlib.nullcontext())
                            with poutine.trace(param_only=True) as capture, \
                                    minibatch(idx, n, data_plate, global_size, share) as mb, \
                                    checks:
                                batch = x if transform is None else transform(x)
                                try:
                                    step_loss = float(loss.loss_and_grads(model, guide, batch))
                                except Exception:
                                    if not checked:  # the cause some of Pyro's ELBOs hide
                                        check_pair_sites(model, guide, batch, n, "fit",
                                                         data_plate)
                                    raise
                                if not checked:  # after the step (its parameters exist: the
                                    # random stream is the same), before any update
                                    check_pair_sites(model, guide, batch, n, "fit", data_plate)
                            checked = True
                            if not mb.plate_seen and (global_size < n or size > 1):
                                raise ValueError(_NO_PLATE.format(data_plate=data_plate))
                            params = {site["value"].unconstrained()
                                      for site in capture.trace.nodes.values()}
                        except Exception as e:  # noqa: BLE001 (re-raised, on every rank)
                            cause = e
                            failure = _step_error(e, loss, last_good, history, step, epoch, b,
                                                  tuple(x.shape))
                    if failure is not None and size == 1:
                        if failure is cause:
                            raise failure
                        raise failure from cause
                    if size > 1:
                        step_loss, params = _all_reduce_step(params, step_loss, failure, step)
                    bad = _non_finite(step_loss, params)
                    if bad:
                        with minibatch(idx, n, data_plate, global_size, share):
                            invalid = _invalid_argument(loss, model, guide, batch)
                        what = (f"invalid distribution parameter at step {step} (epoch {epoch}, "
                                f"batch {b + 1}): {invalid}" if invalid else
                                f"non-finite {bad} at step {step} (epoch {epoch}, batch {b + 1})")
                        last_good.restore()
                        raise TrainingDivergedError(f"{what}; {last_good.message(step)}",
                                                    step=step, epoch=epoch, history=history)
                    seen.update(params)
                    last_good.save(params)
                    updating = True  # (an interrupt from here to the end undoes the update)
                    stepper(params)
                    for p in params:  # None, not zeros: the next backward writes, not adds
                        p.grad = None
                    history.num_steps, done = step, b + 1
                    updating = False
                    if checkpoint is not None:  # the random state an interrupt would save
                        snapshot = get_rng_state(shuffle)
                    running += step_loss / n
                    if progress:
                        bar.update(1)
                        bar.set_postfix(epoch=epoch, loss=f"{running / (b + 1):.4g}",
                                        refresh=False)
            in_epoch = False
            val_loss = math.nan
            if val is not None:
                val_loss = _mean_loss(model, guide, val, loss, max(batch_size, 1024), seed,
                                      data_plate, check=False)
            previous_best = history.best_val_loss
            history.append(epoch, running / steps_per_epoch, val_loss, time.perf_counter() - t0)
            if val is not None:
                if progress:
                    bar.set_postfix(epoch=epoch, loss=f"{history.train_loss[-1]:.4g}",
                                    val=f"{val_loss:.4g}", refresh=False)
                if val_loss < previous_best or (math.isnan(previous_best)
                                                and not math.isnan(val_loss)):
                    best_params = _param_state(seen)
                    history.best_epoch = epoch
                    epochs_since_best = 0
                else:
                    epochs_since_best += 1
            if scheduler:  # epoch-level schedule; ReduceLROnPlateau watches the loss
                if optimizer.pt_scheduler_constructor is ReduceLROnPlateau:
                    optimizer.step(val_loss if val is not None else history.train_loss[-1])
                else:
                    optimizer.step()
            for callback in callbacks:
                callback(epoch, history)
            stop = patience is not None and epochs_since_best >= patience
            if stop:
                history.stop_reason = (f"early stopping: no better validation loss for "
                                       f"{patience} epochs after epoch {history.best_epoch}")
            elif epoch == epochs:
                history.stop_reason = f"completed {epochs} epochs"
            if checkpoint is not None and (stop or epoch % checkpoint_every == 0
                                           or epoch == epochs):
                write_checkpoint(epoch)
            if stop:
                break
    except KeyboardInterrupt:
        if updating:
            last_good.restore()
        # where this epoch stands, resumable exactly when the optimizer's state is whole (not
        # cut inside an update) and batches are read in this process (a worker's draws
        # depend on which batches it was given)
        resumable = (checkpoint is not None and in_epoch and not updating and size == 1
                     and not getattr(rows, "num_workers", 0))
        if resumable:
            write_checkpoint(epoch - 1, {"epoch": epoch, "batch": done, "running": running,
                                         "shuffle": epoch_start}, rng=snapshot)
        history.stop_reason = (f"interrupted in epoch {epoch}; the parameters are those "
                               f"after step {history.num_steps}")
        where = (f", and checkpoint {checkpoint} holds them: resume=True continues from "
                 f"step {history.num_steps}" if resumable else
                 f", and checkpoint {checkpoint} resumes the run from epoch "
                 f"{load_checkpoint(checkpoint)['epoch']}" if checkpoint is not None
                 and Path(checkpoint).exists() else "")
        raise TrainingInterrupted(
            f"fit: interrupted in epoch {epoch}; the parameters are those after step "
            f"{history.num_steps} (the last completed), the history holds "
            f"{len(history.epoch)} completed epochs" + where,
            step=history.num_steps, epoch=epoch, history=history) from None
    finally:
        bar.close()
        for _, p in pyro.get_param_store().named_parameters():
            p.grad = None  # none left behind, whatever the exit
        if stepper is not optimizer:
            stepper.hand_back(optimizer)
    history.params_epoch = history.epoch[-1] if history.epoch else None
    if restore_best is None:
        restore_best = patience is not None
    if restore_best and best_params is not None:
        _load_param_state(best_params, "the best epoch's state")
        history.params_epoch = history.best_epoch
    return history


_NO_PLATE = ("minibatch training needs the model's local sites inside pyro.plate({data_plate!r}, "
             "x.shape[0]) (and so does training on several processes, which shards every "
             "batch); no such plate was found (pass data_plate=..., or batch_size=None in one "
             "process)")


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own draws in a run seeded ``seed`` (rank 0: ``seed``).

    >>> rank_seed(7, 0), rank_seed(7, 1) != rank_seed(8, 0)
    (7, True)
    """
    return (seed + 1_000_003 * rank) % 2**63


def _agree_on_settings(loss, rows, batch_size, seed, epochs, steps, val, checkpoint,
                       checkpoint_every, patience, resume) -> None:
    """Every rank was given the same data and settings, which decide the collectives each
    rank takes: else one clear error on every rank, before anything else is combined."""
    agree("fit", {
        "the number of rows": len(rows), "the data (a fingerprint)": rows.fingerprint(),
        "the batch size": batch_size, "the steps per epoch": steps, "the seed": seed,
        "the number of epochs": epochs, "the objective": type(loss).__name__,
        "the objective's settings": _objective_settings(loss),
        "the validation rows": None if val is None else len(val),
        "checkpointing (path set, every)": (checkpoint is not None, checkpoint_every),
        "patience": patience, "resume": bool(resume),
    })


def _agree_on_parameters(start_epoch: int) -> None:
    """Every rank starts from the same parameters (names, shapes, a checksum of values)."""
    params = dict(sorted(pyro.get_param_store().named_parameters()))
    agree("fit", {
        "the epoch to start from": start_epoch,
        "the parameter names and shapes": [(k, tuple(v.shape)) for k, v in params.items()],
        "the initial parameter values (sums)": [
            round(float(v.detach().double().sum()), 6) for v in params.values()],
    })


def _step_error(e: BaseException, loss, last_good, history, step: int, epoch: int, b: int,
                shape) -> BaseException:
    """The error a failed step raises: a model error named by the step, a diverged run
    restored to its last good state, or the error itself."""
    if isinstance(e, PairError) or not isinstance(e, USER_ERRORS):
        return e
    if "found invalid values" not in str(e):
        return user_error(f"fit: step {step} (epoch {epoch}, batch {b + 1}, rows of shape "
                          f"{shape})", loss, e)
    last_good.restore()
    first = str(e).strip().splitlines()[0].rstrip(":")
    return TrainingDivergedError(
        f"invalid distribution parameter at step {step} (epoch {epoch}, batch {b + 1}): "
        f"{first}; {last_good.message(step)}", step=step, epoch=epoch, history=history)


def _invalid_argument(loss, model, guide, batch) -> str:
    """The invalid distribution argument behind a non-finite step, found by running the loss
    again with Pyro's validation on (later steps run without it), or "" if there is none."""
    try:
        with pyro.validation_enabled(True), torch.no_grad():
            loss.loss(model, guide, batch)
    except Exception as e:  # noqa: BLE001 (only its message is wanted)
        if "found invalid values" in str(e):
            return "Expected" + str(e).split("Expected", 1)[-1].splitlines()[0].rstrip(":")
    return ""


def _run_record(optimizer, loss, rows, batch_size: int, seed, size: int) -> dict:
    """What a checkpoint records of its run, to be compared when it is resumed."""
    args = optimizer.pt_optim_args if not callable(getattr(optimizer, "pt_optim_args", None)) \
        else "a per-parameter function"
    constructor = getattr(optimizer, "pt_optim_constructor", None)
    return {
        "optimizer": getattr(constructor, "__name__", type(optimizer).__name__),
        "optimizer arguments": dict(args) if isinstance(args, dict) else args,
        "batch size": batch_size, "number of rows": len(rows),
        "data (a fingerprint)": rows.fingerprint(), "seed": seed,
        "objective": type(loss).__name__,
        "objective's settings": _objective_settings(loss),
    }


def _objective_settings(loss) -> dict:
    """An objective's plain settings (K, beta, ...), to compare across ranks and runs: plain
    Python values (an enum's value), which a ``weights_only`` load reads back.

    >>> from pyro_lvm.infer import IWAE
    >>> _objective_settings(IWAE(4, estimator="dreg"))["estimator"].__class__
    <class 'str'>
    """
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in sorted(vars(loss).items())
            if isinstance(v, int | float | str | bool | None)}


def _changes(state: dict, record: dict, shapes: dict) -> list[str]:
    """What differs between the run that wrote ``state`` and this one, one phrase each."""
    saved = state["fit"].get("record")
    if saved is None:  # written before runs were recorded: the number of rows only
        saved_n = state["fit"]["num_data"]
        return ([] if saved_n == record["number of rows"] else
                [f"number of rows {saved_n} then, {record['number of rows']} now"])
    # a key the checkpoint's version did not record is not compared
    out = [f"{key} {saved[key]!r} then, {value!r} now" for key, value in record.items()
           if key in saved and saved[key] != value]
    before = saved.get("params", {})
    if before != shapes:
        missing = sorted(set(shapes) - set(before))
        extra = sorted(set(before) - set(shapes))
        reshaped = sorted(k for k in set(before) & set(shapes) if before[k] != shapes[k])
        for what, names in (("parameters not in the checkpoint", missing),
                            ("parameters the model no longer has", extra),
                            ("parameters of another shape", reshaped)):
            if names:
                out.append(f"{what}: {names}")
    return out


def _with_arguments(optimizer_state: dict, optimizer) -> dict:
    """A saved per-parameter optimizer state with ``optimizer``'s arguments (a new learning
    rate, ...) in place of the saved ones, which loading would otherwise bring back."""
    args = getattr(optimizer, "pt_optim_args", None)
    if not isinstance(args, dict):
        return optimizer_state
    return {name: {**saved, "param_groups": [{**group, **args}
                                             for group in saved.get("param_groups", [])]}
            for name, saved in optimizer_state.items()}


def _check_transform_replays(transform, x: torch.Tensor) -> None:
    """A checkpoint holds the global random states (torch, NumPy, Python), so a resumed run
    repeats a ``transform`` that draws from them; one with a generator of its own would not.
    Warn when two calls from the same global state differ (the states are left as found)."""
    unused = torch.Generator()  # (the shuffler's slot in the saved states)
    found = get_rng_state(unused)  # every state a checkpoint holds, CUDA's included
    outputs = []
    for _ in range(3):
        set_rng_state(found, unused)
        if len(outputs) < 2:  # (the third pass only puts the states back)
            outputs.append(transform(x))
    if isinstance(outputs[0], torch.Tensor) and not torch.equal(*outputs):
        warnings.warn(
            "fit: the transform gives different batches from the same global random state "
            "(it draws from a generator of its own?): the checkpoint cannot hold that state, "
            "so a resumed run will not repeat the uninterrupted one. Draw from torch's global "
            "random state, as pyro_lvm.datasets.dynamic_binarize does", stacklevel=3)


def _check_checkpoint_path(path: Path) -> None:
    """A checkpoint path that cannot be written is an error before any training."""
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory: give a file path, e.g. "
                         f"{path / 'checkpoint.pt'}")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"checkpoint {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"checkpoint {path}: the directory {parent} is not writable")


def _read_checkpoint(checkpoint, size: int) -> dict:
    """The checkpoint's state, after checking it was written for as many processes."""
    state = load_checkpoint(checkpoint)
    saved_size = state["fit"].get("world_size", 1)
    if saved_size != size:
        raise CheckpointError(
            f"checkpoint {checkpoint} was written by {saved_size} process(es); resume it "
            f"with the same number (this run has {size}), or the run would not continue "
            "as it would have without the interruption")
    return state


def _all_reduce_step(params, step_loss: float, failure, step: int):
    """Sum every parameter's gradient, the step's loss, which parameters the step used and
    whether it failed, across ranks (one all-reduce). Returns (the summed loss: the
    single-process estimate of the global minibatch's, the parameters used on any rank).
    A failure on any rank raises on every rank: the failing rank's own error, the others a
    DistributedError with its message."""
    ordered = [p for _, p in sorted(pyro.get_param_store().named_parameters())]
    used = torch.tensor([float(p in params) for p in ordered], dtype=torch.float64)
    grads = []
    for p in ordered:
        if p.grad is None or failure is not None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    device = ordered[0].device if ordered else torch.device("cpu")
    extra = torch.cat([used, torch.tensor([step_loss, float(failure is not None)],
                                          dtype=torch.float64)]).to(device)
    all_reduce_sum_([*grads, extra], "fit", "the gradients and the loss")
    if float(extra[-1]) > 0:
        raise_together(f"fit: step {step}", failure)
    return float(extra[-2]), {p for p, u in zip(ordered, extra[:-2], strict=True) if u > 0}


class _LastGoodState:
    """The parameters as they were before the latest update (preallocated, copied in place)."""

    def __init__(self):
        self.values: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def save(self, params) -> None:
        for p in params:
            buf = self.values.get(p)
            if buf is None or buf.shape != p.shape:
                self.values[p] = p.detach().clone()
            else:
                buf.copy_(p)

    @torch.no_grad()
    def restore(self) -> None:
        store_params = {p for _, p in pyro.get_param_store().named_parameters()}
        for p, value in self.values.items():
            p.copy_(value)
        zero_grads(store_params)

    def message(self, step: int) -> str:
        if step == 1:
            return "training stopped; the parameters keep their initial values"
        return (f"training stopped and the parameters are restored to their values at step "
                f"{step - 1}, the last step with a finite loss and gradients")


def _non_finite(step_loss: float, params) -> str:
    """What is non-finite in this step ("" if nothing): one fused norm, then the culprit."""
    if not math.isfinite(step_loss):
        return f"loss ({step_loss})"
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or torch.isfinite(torch.nn.utils.get_total_norm(grads)):
        return ""
    for p in params:
        if p.grad is not None and not torch.isfinite(p.grad).all():
            name = pyro.get_param_store().param_name(p)
            return f"gradient of parameter {name!r}"
    return ""  # the norm overflowed, but every gradient is finite
