"""The record of a training run: per-epoch losses and times, and its plot."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class History:
    """Per-epoch training record returned by :func:`pyro_lvm.infer.fit`.

    Losses are per datapoint, in nats, as Pyro reports them (the negative bound): for
    ``Trace_ELBO`` the train loss is the epoch's mean minibatch estimate of -ELBO / N and the
    validation loss is -ELBO / N on the validation set with fixed random draws.

    Example:
        >>> h = History(epoch=[1, 2], train_loss=[3.0, 2.5], val_loss=[3.1, 2.7],
        ...             epoch_time=[0.1, 0.1])
        >>> h.best_val_loss
        2.7
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stop_reason: str = ""
    num_steps: int = 0

    def append(self, epoch: int, train_loss: float, val_loss: float, epoch_time: float) -> None:
        """Record one finished epoch."""
        self.epoch.append(int(epoch))
        self.train_loss.append(float(train_loss))
        self.val_loss.append(float(val_loss))
        self.epoch_time.append(float(epoch_time))

    @property
    def best_val_loss(self) -> float:
        """The lowest validation loss seen (nan when there was no validation set)."""
        finite = [v for v in self.val_loss if not math.isnan(v)]
        return min(finite) if finite else math.nan

    def to_dict(self) -> dict:
        """Plain-Python form (JSON- and checkpoint-safe).

        >>> History().to_dict()["epoch"]
        []
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        """Inverse of :meth:`to_dict`.

        >>> History.from_dict(History(epoch=[1]).to_dict()).epoch
        [1]
        """
        return cls(**{k: (list(v) if isinstance(v, list | tuple) else v) for k, v in d.items()})

    def plot(self, ax=None, reference: float | None = None, reference_label: str = "reference"):
        """Plot train and validation loss against epoch; returns the matplotlib Figure.

        ``reference`` draws a horizontal line (e.g. the exact -log p(x) per datapoint).

        >>> fig = History(epoch=[1, 2], train_loss=[2., 1.], val_loss=[2., 1.5],
        ...               epoch_time=[0., 0.]).plot(reference=0.9)
        """
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.5))
        else:
            fig = ax.figure
        ax.plot(self.epoch, self.train_loss, label="train")
        if any(not math.isnan(v) for v in self.val_loss):
            ax.plot(self.epoch, self.val_loss, label="validation")
        if self.best_epoch is not None:
            ax.axvline(self.best_epoch, color="grey", ls=":", lw=1, label="best epoch")
        if reference is not None:
            ax.axhline(reference, color="k", ls="--", lw=1, label=reference_label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss per datapoint (nats)")
        ax.legend()
        fig.tight_layout()
        return fig
