"""The record of a training run: per-epoch losses and times, and its plot."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ..figures import new_figure


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
    params_epoch: int | None = None  # the epoch whose parameters fit() left in place
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

    def plot(self, ax=None, reference: float | Mapping[str, float] | None = None,
             title: str | None = None, ylabel: str = "loss per datapoint (nats)"):
        """Train and validation loss against epoch; returns the matplotlib Figure.

        ``reference`` adds dashed horizontal lines: a value, or a mapping from labels to
        values (e.g. the exact -log p(x) per datapoint of a model with a closed form). The
        y-axis zooms on the converged part, since a random start's first epochs can be huge.
        The figure is made without pyplot (no global state); Jupyter still displays it.

        >>> h = History(epoch=[1, 2, 3], train_loss=[3., 2., 1.5], val_loss=[3.1, 2.2, 1.9],
        ...             epoch_time=[0., 0., 0.])
        >>> fig = h.plot(reference={"exact": 1.2})
        >>> [line.get_label() for line in fig.axes[0].lines]
        ['train', 'validation', 'exact']
        """
        if ax is None:
            fig = new_figure(6.0, 3.6)
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        if reference is not None and not isinstance(reference, Mapping):
            reference = {"reference": float(reference)}
        reference = dict(reference or {})
        ax.plot(self.epoch, self.train_loss, label="train", color="C0")
        has_val = any(not math.isnan(v) for v in self.val_loss)
        if has_val:
            ax.plot(self.epoch, self.val_loss, label="validation", color="C1")
        for k, (label, value) in enumerate(reference.items()):
            ax.axhline(float(value), ls="--", lw=1.2, color=f"C{k + 2}", label=label)
        if has_val and self.best_epoch is not None and self.best_epoch in self.epoch:
            best = self.val_loss[self.epoch.index(self.best_epoch)]
            ax.plot([self.best_epoch], [best], "o", color="C1", ms=4, label="_best epoch")
        finite = sorted(v for v in [*self.train_loss, *self.val_loss] if math.isfinite(v))
        if finite:
            tail = finite[: max(1, int(0.9 * len(finite)))]
            lo = min([*tail, *reference.values()])
            hi = max([*tail, *reference.values()])
            pad = 0.08 * (hi - lo) if hi > lo else 1.0
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig
