"""Matplotlib figures without pyplot: no global figure registry, no GUI backend.

Every figure pyro_lvm draws (training curves, diagnostics, report images) starts here.
Jupyter still displays the returned :class:`~matplotlib.figure.Figure`.
"""

from __future__ import annotations

__all__ = ["new_figure", "subplots"]


def new_figure(width: float = 6.0, height: float = 4.0, dpi: float | None = None):
    """A matplotlib Figure attached to an Agg canvas (``dpi=None``: matplotlib's default).

    >>> fig = new_figure(3, 2)
    >>> type(fig.canvas).__name__
    'FigureCanvasAgg'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def subplots(width: float, height: float, ncols: int = 1, nrows: int = 1,
             dpi: float | None = None):
    """A new figure and its axes: a row of ``ncols`` axes, or an ``nrows`` x ``ncols`` array.

    >>> fig, axes = subplots(6, 2, ncols=3)
    >>> len(axes), len(fig.axes)
    (3, 3)
    """
    fig = new_figure(width, height, dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, (axes[0] if nrows == 1 else axes)
