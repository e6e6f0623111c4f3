"""Figures of the diagnostics, kept apart from the numbers (matplotlib, no pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def plot_snr_history(runs: Mapping[str, object], title: str | None = None):
    """Gradient SNR of the model's and the guide's parameters across training, one line per
    objective (Rainforth et al. 2018, figure 4). ``runs`` maps a label to a
    :class:`~pyro_lvm.diagnostics.SNRCallback` (anything with ``epochs`` and ``snr``).

    >>> from types import SimpleNamespace
    >>> run = SimpleNamespace(epochs=[1, 2], snr={"model": [1.0, 2.0], "guide": [0.5, 0.4]})
    >>> fig = plot_snr_history({"IWAE(K=8)": run})
    >>> [ax.get_title() for ax in fig.axes]
    ['model parameters', 'guide parameters']
    """
    fig, axes = _figure(9.0, 3.4, ncols=2)
    for ax, group in zip(axes, ("model", "guide"), strict=True):
        for label, run in runs.items():
            ax.plot(run.epochs, run.snr[group], marker="o", ms=3, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("gradient SNR (RMS over elements)")
        ax.set_title(f"{group} parameters")
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_snr_versus_particles(results: Mapping[str, dict], title: str | None = None):
    """SNR against the number of particles K on log-log axes, one line per estimator, with
    the fitted slopes in the legend. ``results`` maps a label to the output of
    :func:`~pyro_lvm.diagnostics.snr_versus_particles`.

    >>> r = {"particles": [1, 10], "snr": {"model": [1., 3.], "guide": [1., .3]},
    ...      "slope": {"model": 0.48, "guide": -0.52}}
    >>> fig = plot_snr_versus_particles({"IWAE": r})
    >>> fig.axes[1].get_legend().get_texts()[0].get_text()
    'IWAE (slope -0.52)'
    """
    fig, axes = _figure(9.0, 3.4, ncols=2)
    for ax, group in zip(axes, ("model", "guide"), strict=True):
        for label, r in results.items():
            ax.plot(r["particles"], r["snr"][group], marker="o", ms=3,
                    label=f"{label} (slope {r['slope'][group]:.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("particles K")
        ax.set_ylabel("gradient SNR")
        ax.set_title(f"{group} parameters")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
