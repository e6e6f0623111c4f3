"""Experiment tracking: :func:`~pyro_lvm.infer.fit` callbacks that log a run's history to
TensorBoard or MLflow.

Both log, after every epoch, the train and validation loss (per datapoint, in nats: the
negative bound), the best epoch so far and its validation loss, and the epoch's wall time;
given an :class:`~pyro_lvm.diagnostics.SNRCallback` (listed before them in ``callbacks``),
also the gradient SNR per parameter group it recorded. The tracking packages are optional
extras, imported when a callback is made, not when pyro_lvm is: ``pip install
pyro_lvm[tensorboard]`` / ``pip install pyro_lvm[mlflow]``.

The scalars, as (tag, value, epoch):

>>> from pyro_lvm.infer import History
>>> h = History(epoch=[1], train_loss=[3.0], val_loss=[3.2], epoch_time=[0.5], best_epoch=1)
>>> [tag for tag, _, _ in epoch_scalars(1, h)]
['loss/train', 'loss/validation', 'time/epoch_seconds', 'best/epoch', 'best/validation_loss']
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator

from ..distributed import world


def _require(module: str, extra: str):
    """Import an optional package, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is not installed; it is an optional extra of pyro_lvm: "
                          f"pip install pyro_lvm[{extra}]  (or pip install {extra})") from err


def epoch_scalars(epoch: int, history) -> Iterator[tuple[str, float, int]]:
    """The scalars of one finished epoch of ``history`` as (tag, value, epoch); a missing
    value (no validation set: nan; no best epoch yet) is left out."""
    i = history.epoch.index(epoch) if epoch in history.epoch else len(history.epoch) - 1
    for tag, value in (("loss/train", history.train_loss[i]),
                       ("loss/validation", history.val_loss[i]),
                       ("time/epoch_seconds", history.epoch_time[i])):
        if not math.isnan(value):
            yield tag, float(value), epoch
    if history.best_epoch is not None:
        yield "best/epoch", float(history.best_epoch), epoch
        if not math.isnan(history.best_val_loss):
            yield "best/validation_loss", float(history.best_val_loss), epoch


def snr_scalars(snr, start: int = 0) -> Iterator[tuple[str, float, int]]:
    """The SNR values an :class:`~pyro_lvm.diagnostics.SNRCallback` recorded from its
    ``start``-th measurement on, as ("snr/<group>", value, epoch of the measurement).

    >>> class Recorded:  # what an SNRCallback holds after two measurements
    ...     epochs, snr = [2, 4], {"model": [1.5, 2.0], "guide": [0.5, 0.25]}
    >>> list(snr_scalars(Recorded(), start=1))
    [('snr/model', 2.0, 4), ('snr/guide', 0.25, 4)]
    """
    for j in range(start, len(snr.epochs)):
        for group, values in snr.snr.items():
            if not math.isnan(values[j]):
                yield f"snr/{group}", float(values[j]), snr.epochs[j]


class _Tracker(ABC):
    """Common part: turn each epoch into scalars, including SNR measured since last time;
    only rank 0 of a process group writes (fit calls callbacks on every rank)."""

    def __init__(self, snr=None):
        self.snr = snr
        self._snr_logged = 0
        self.history = None

    def __call__(self, epoch: int, history) -> None:
        self.history = history
        if world()[0] != 0:  # under torchrun every rank has the same history: rank 0 writes
            return
        scalars = list(epoch_scalars(epoch, history))
        if self.snr is not None:
            scalars += snr_scalars(self.snr, self._snr_logged)
            self._snr_logged = len(self.snr.epochs)
        for tag, value, step in scalars:
            self._log(tag, value, step)

    @abstractmethod
    def _log(self, tag: str, value: float, step: int) -> None:
        """Write one scalar."""

    @abstractmethod
    def close(self) -> None:
        """Finish the run's record."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TensorBoardCallback(_Tracker):
    """Log a :func:`~pyro_lvm.infer.fit` run to TensorBoard event files in ``log_dir``
    (through ``torch.utils.tensorboard``; needs ``pip install pyro_lvm[tensorboard]``).

    Tags: ``loss/train``, ``loss/validation``, ``time/epoch_seconds``, ``best/epoch``,
    ``best/validation_loss`` and, with ``snr=``, ``snr/model``, ``snr/guide`` (and
    ``snr/shared``), all against the epoch. ``close()`` (or a ``with`` block) writes the
    stop reason as text and closes the file.

    Example:
        >>> from pyro_lvm.infer import fit
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> with TensorBoardCallback("runs/ppca") as tb:  # doctest: +SKIP
        ...     fit(ppca.model, ppca.guide, ppca.sample(100), epochs=3, callbacks=[tb])
    """

    def __init__(self, log_dir, snr=None):
        super().__init__(snr)
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = str(log_dir)
        self.writer = SummaryWriter(self.log_dir)

    def __call__(self, epoch: int, history) -> None:
        super().__call__(epoch, history)
        self.writer.flush()  # readable by TensorBoard while training runs

    def _log(self, tag, value, step):
        self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        """Write the stop reason (when the run has one) and close the event file."""
        if self.history is not None and self.history.stop_reason:
            self.writer.add_text("stop_reason", self.history.stop_reason,
                                 self.history.epoch[-1] if self.history.epoch else 0)
        self.writer.close()


class MLflowCallback(_Tracker):
    """Log a :func:`~pyro_lvm.infer.fit` run to MLflow (needs ``pip install
    pyro_lvm[mlflow]``).

    ``run``: an MLflow ``Run`` or a run id to log into; by default the active run
    (``mlflow.start_run()``) or, without one, a new run in ``experiment`` (a name, created if
    needed; the default experiment when None), which ``close()`` ends. Metrics have the
    names of :class:`TensorBoardCallback`'s tags (``loss/train``, ``snr/guide``, ...) with the
    epoch as step; ``close()`` also sets the tag ``stop_reason``.

    Example:
        >>> from pyro_lvm.infer import fit
        >>> from pyro_lvm.models import PPCA
        >>> ppca = PPCA(4, 2)
        >>> with MLflowCallback(experiment="ppca") as ml:  # doctest: +SKIP
        ...     fit(ppca.model, ppca.guide, ppca.sample(100), epochs=3, callbacks=[ml])
    """

    def __init__(self, run=None, experiment: str | None = None, snr=None,
                 tracking_uri: str | None = None):
        super().__init__(snr)
        mlflow = _require("mlflow", "mlflow")
        self.client = mlflow.tracking.MlflowClient(tracking_uri)
        self._owns_run = False
        if run is None and experiment is None and tracking_uri is None:
            run = mlflow.active_run()
        if run is None:
            experiment_id = "0"
            if experiment is not None:
                found = self.client.get_experiment_by_name(experiment)
                experiment_id = (found.experiment_id if found is not None
                                 else self.client.create_experiment(experiment))
            run = self.client.create_run(experiment_id)
            self._owns_run = True
        self.run_id = run if isinstance(run, str) else run.info.run_id

    def _log(self, tag, value, step):
        self.client.log_metric(self.run_id, tag, value, step=step)

    def close(self) -> None:
        """Set the tag ``stop_reason``; end the run if this callback started it."""
        if self.history is not None and self.history.stop_reason:
            self.client.set_tag(self.run_id, "stop_reason", self.history.stop_reason)
        if self._owns_run:
            self.client.set_terminated(self.run_id)
            self._owns_run = False
