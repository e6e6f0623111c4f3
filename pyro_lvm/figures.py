"""Matplotlib figures that behave like pyplot's where a person looks at them, and like plain
``Figure`` objects everywhere else. Every figure pyro_lvm draws (training curves, diagnostics,
report images) starts here.

How a figure reaches pyplot (the design, and how it avoids the registry's leak):

- With a non-interactive backend (Agg: scripts writing files, servers, tests, the reports)
  or before anything imported ``matplotlib.pyplot``, a figure is a plain
  :class:`~matplotlib.figure.Figure` on an Agg canvas, never registered with pyplot: it is
  freed as soon as the caller drops it, so a loop drawing 200 figures keeps none alive.
  ``fig.savefig`` works as on any figure.
- With an interactive backend (a GUI window, Jupyter's inline backend), a new figure is
  registered with pyplot as ``plt.figure()`` would do, so ``plt.show()`` displays it and
  the inline backend shows and closes it at the end of the cell. pyplot holds at most
  :data:`MAX_PYPLOT_FIGURES` of pyro_lvm's figures: registering one more releases the oldest
  (``plt.close``: it stays a valid figure for whoever holds it, ``fig.show()`` brings it
  back), so a long loop never piles up figures or matplotlib's "too many figures" warning.
- :meth:`PlotFigure.show` works on every figure: it registers the figure with pyplot if
  needed and shows it (a window, or an image in Jupyter); with a non-interactive backend it
  warns as matplotlib does and returns.
- In Jupyter a figure displays as a PNG once, whether it is the cell's value, passed to
  ``display`` or shown by ``plt.show()`` (displaying it releases it from pyplot, so the end of
  the cell does not show it a second time).
"""

from __future__ import annotations

import io
import os
import sys
import warnings
import weakref
from collections import deque

from matplotlib.figure import Figure

__all__ = ["MAX_PYPLOT_FIGURES", "PlotFigure", "interactive_backend", "new_figure", "subplots"]

#: At most this many of pyro_lvm's figures are registered with pyplot at once (interactive
#: backends only); matplotlib warns at ``rcParams["figure.max_open_warning"]`` = 20 open.
MAX_PYPLOT_FIGURES = 10

# pyro_lvm's figures registered with pyplot, oldest first (weak: pyplot owns them)
_registered: deque[weakref.ref] = deque()


def interactive_backend() -> str | None:
    """The name of pyplot's backend when it can display figures (a GUI toolkit, Jupyter's
    inline backend), else None: pyplot not imported, or a file-only backend such as Agg.

    >>> interactive_backend() is None  # the tests run with Agg
    True
    """
    if "matplotlib.pyplot" not in sys.modules:
        return None
    import matplotlib
    from matplotlib.backends import BackendFilter, backend_registry

    name = matplotlib.get_backend()  # resolved as plt.figure() would resolve it
    if name.lower() in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE):
        return None
    return name


def _in_pyplot(fig: Figure) -> bool:
    from matplotlib._pylab_helpers import Gcf

    manager = fig.canvas.manager
    return manager is not None and Gcf.figs.get(manager.num) is manager


def _register(fig: Figure) -> None:
    """Hand ``fig`` to pyplot (``plt.figure(fig)``), releasing pyro_lvm's oldest figure there
    when :data:`MAX_PYPLOT_FIGURES` are already held."""
    import matplotlib.pyplot as plt

    if _in_pyplot(fig):
        return
    fig.canvas.manager = None  # a figure released earlier keeps its old, destroyed manager
    live = [ref for ref in _registered if ref() is not None and _in_pyplot(ref())]
    _registered.clear()
    _registered.extend(live)
    while len(_registered) >= MAX_PYPLOT_FIGURES:
        plt.close(_registered.popleft()())
    plt.figure(fig)
    _registered.append(weakref.ref(fig))


def _release(fig: Figure) -> None:
    if _in_pyplot(fig):
        import matplotlib.pyplot as plt

        plt.close(fig)


class PlotFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` whose :meth:`show` works without pyplot having
    created it, and that Jupyter displays once (see the module's notes).

    >>> fig = new_figure(2, 1)
    >>> fig.show()  # Agg: nothing to show, and no AttributeError
    >>> isinstance(fig, Figure)
    True
    """

    def show(self, warn: bool = True) -> None:
        """Display the figure: a window with a GUI backend, an image in Jupyter; with a
        non-interactive backend, warn (as matplotlib does, unless headless) and return.

        >>> new_figure(1, 1).show(warn=False)
        """
        backend = interactive_backend()
        if backend is None:
            headless = sys.platform == "linux" and not os.environ.get("DISPLAY")
            if warn and not headless:
                warnings.warn(f"{type(self.canvas).__name__} is non-interactive, and thus "
                              "cannot be shown; use fig.savefig(path)", stacklevel=2)
            return
        if "inline" in backend.lower():
            from IPython.display import display

            display(self)
            return
        _register(self)
        super().show(warn=warn)

    def _ipython_display_(self) -> None:
        """Jupyter: publish the PNG, and release the figure from pyplot so that the inline
        backend's end-of-cell ``show`` does not display it a second time."""
        from IPython.display import Image, display

        _release(self)
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        display(Image(data=buf.getvalue(), format="png"))


def new_figure(width: float = 6.0, height: float = 4.0, dpi: float | None = None) -> PlotFigure:
    """A new :class:`PlotFigure` (``dpi=None``: matplotlib's default), registered with pyplot
    only under an interactive backend (module notes).

    >>> fig = new_figure(3, 2)
    >>> type(fig.canvas).__name__, fig.canvas.manager is None
    ('FigureCanvasAgg', True)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = PlotFigure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    if interactive_backend() is not None:
        _register(fig)
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
