"""Self-contained HTML reports: figures embedded as base64 PNG, inline CSS, no external assets.

This module only turns numbers and arrays that were computed elsewhere into figures and HTML;
it trains nothing. Figures come from :func:`pyro_lvm.figures.new_figure` (never registered
with pyplot under a file-only backend such as Agg). Numbers are formatted by kind
(:data:`VALUE_KINDS`: nats, p-values, seconds, counts) by :func:`format_value`; a warning
that says when a section's numbers should not be trusted is a :meth:`Report.add_warning` box.

Example:
    >>> rep = Report("Toy report")
    >>> rep.add_heading("Numbers")
    >>> rep.add_table({"test log p(x)": -12.3456789, "epochs": 3})
    >>> rep.add_warning("3 epochs: the training curve is still falling.")
    >>> rep.add_figure(image_grid([torch.rand(4, 4)], (2, 2)), caption="four images")
    >>> html = rep.render()
    >>> html.startswith("<!DOCTYPE html>"), "data:image/png;base64," in html
    (True, True)
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .figures import new_figure
from .files import atomic_open

__all__ = [
    "VALUE_KINDS",
    "Report",
    "figure_to_base64",
    "figure_to_html",
    "format_value",
    "image_grid",
    "metrics_table",
    "new_figure",
]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 980px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: .3em .8em; text-align: left; }
td.num { text-align: right; font-family: Menlo, Consolas, monospace; white-space: nowrap; }
.table-wrap { overflow-x: auto; }
th { background: #f4f4f4; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
p.note { color: #555; font-size: 0.9em; }
code { background: #f6f6f6; padding: 0 .2em; white-space: nowrap; }
div.warning { border-left: 5px solid #d9822b; background: #fff4e5; padding: .6em 1em;
              margin: 1em 0; }
div.warning strong { color: #a35200; }
div.warning p { margin: .3em 0; }
""".strip()


def figure_to_base64(fig: Figure, dpi: int | None = None) -> str:
    """The figure rendered as a PNG, base64-encoded (ASCII text).

    >>> fig = new_figure(1, 1)
    >>> base64.b64decode(figure_to_base64(fig))[:4]
    b'\\x89PNG'
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi if dpi is not None else fig.dpi,
                bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figure_to_html(fig: Figure, alt: str = "", caption: str | None = None,
                   dpi: int | None = None) -> str:
    """An ``<img>`` tag with the figure embedded as ``data:image/png;base64``, in a <figure>.

    >>> figure_to_html(new_figure(1, 1), alt="empty").startswith(
    ...     '<figure><img alt="empty" src="data:image/png;base64,')
    True
    """
    tag = (f'<img alt="{html.escape(alt)}" '
           f'src="data:image/png;base64,{figure_to_base64(fig, dpi)}">')
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{tag}{cap}</figure>"


def _as_numpy(images) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        return images.detach().cpu().double().numpy()
    return np.asarray(images, dtype=float)


def image_grid(rows: Sequence, image_shape: Sequence[int], row_labels: Sequence[str] | None = None,
               title: str | None = None, vmin: float | None = 0.0, vmax: float | None = 1.0,
               cmap: str = "gray_r", cell_size: float = 0.8) -> Figure:
    """A grid figure: row ``i`` shows the flattened images ``rows[i]`` reshaped to ``image_shape``.

    Typical uses: ``[originals, reconstructions]`` (one row each) or ``[samples]``. A single
    2-D array is also accepted and shown one image per cell, wrapped at 10 columns. Values
    are shown on the fixed scale ``[vmin, vmax]`` (clipped) so rows are comparable; pass
    ``vmin=vmax=None`` to scale each image on its own.

    >>> fig = image_grid([torch.rand(5, 64), torch.rand(5, 64)], (8, 8),
    ...                  row_labels=["data", "reconstruction"])
    >>> len(fig.axes)
    10
    """
    shape = tuple(int(s) for s in image_shape)
    size = math.prod(shape)
    if isinstance(rows, torch.Tensor | np.ndarray) and np.ndim(rows) == 2:
        flat = _as_numpy(rows)
        ncols_wrap = min(10, len(flat))
        rows = [flat[i:i + ncols_wrap] for i in range(0, len(flat), ncols_wrap)]
    arrays = [_as_numpy(r).reshape(-1, size) for r in rows]
    if not arrays or all(len(a) == 0 for a in arrays):
        raise ValueError("image_grid needs at least one image")
    if row_labels is not None and len(row_labels) != len(arrays):
        raise ValueError(f"got {len(row_labels)} row labels for {len(arrays)} rows")
    ncols = max(len(a) for a in arrays)
    label_width = 1.3 if row_labels else 0.0
    fig = new_figure(cell_size * ncols + label_width,
                     cell_size * len(arrays) + (0.4 if title else 0.0), dpi=100)
    axes = fig.subplots(len(arrays), ncols, squeeze=False)
    for i, arr in enumerate(arrays):
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(arr):
                ax.imshow(arr[j].reshape(shape), cmap=cmap, vmin=vmin, vmax=vmax,
                          interpolation="nearest")
            else:
                ax.axis("off")
            if j == 0 and row_labels:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


#: The kinds of number :func:`format_value` knows, and how each is written.
VALUE_KINDS = {
    "auto": "floats to `precision` decimals (tiny or huge ones in scientific notation), "
            "integers as they are",
    "nats": "log-likelihoods and KL divergences: 4 decimals",
    "p": "p-values: 3 significant digits, below 0.001 as 1.0e-44",
    "seconds": "times: 0.1 s",
    "count": "integers",
}


def format_value(value, precision: int = 4, kind: str = "auto") -> str:
    """A short human-readable string for a metric value, by ``kind`` (:data:`VALUE_KINDS`):
    floats to ``precision`` decimals, ints unchanged, sequences comma-separated.

    >>> format_value(3.14159265), format_value(12), format_value(float("nan")), format_value(1e-7)
    ('3.1416', '12', 'nan', '1.0e-07')
    >>> format_value(1.007e-44, kind="p"), format_value(0.01234, kind="p")
    ('1.0e-44', '0.0123')
    >>> format_value(12.3456, kind="seconds"), format_value(-21.328512, kind="nats")
    ('12.3', '-21.3285')
    """
    if kind not in VALUE_KINDS:
        raise ValueError(f"kind must be one of {tuple(VALUE_KINDS)}, got {kind!r}")
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        if kind == "count" and value.is_integer():
            return str(int(value))
        if kind == "seconds":
            return f"{value:.1f}"
        if kind == "p":
            return f"{value:.1e}" if value < 1e-3 else f"{value:.3g}"
        if value != 0 and (abs(value) < 10 ** -precision or abs(value) >= 1e9):
            return f"{value:.1e}"
        return f"{value:.{precision}f}"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v, precision, kind) for v in value)
    return str(value)


# text that is numbers (an estimate with its error, "8 of 8", "632 / 0.0%"): aligned as numbers
_NUMBER = r"[-+]?\d[\d.]*(?:e[-+]?\d+)?%?"
_NUMERIC_TEXT = re.compile(rf"{_NUMBER}(?: (?:±|/|of) {_NUMBER})*")


def metrics_table(rows: Mapping[str, object] | Iterable[Sequence[object]],
                  headers: Sequence[str] = ("metric", "value"), precision: int = 4,
                  kinds: Mapping[str, str] | Sequence[str] | None = None) -> str:
    """An HTML ``<table>`` of metrics; every cell is HTML-escaped, numbers right-aligned and
    never wrapped.

    ``rows`` is a mapping ``{name: value}`` (two columns) or an iterable of row sequences
    with one cell per header. ``kinds`` says how numbers are written (:data:`VALUE_KINDS`):
    for a mapping, a mapping from row names to kinds; for row sequences, one kind per column.
    A row name or header ending in "(s)" is in seconds unless ``kinds`` says otherwise.
    Text made of numbers ("0.89 ± 0.11", "8 of 8", "632 / 0.0%") is aligned as numbers.

    >>> print(metrics_table({"log p(x)": -1.23456, "steps": 10,
    ...                      "fit time (s)": 3.14159}))  # doctest: +NORMALIZE_WHITESPACE
    <div class="table-wrap"><table><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>
    <tr><td>log p(x)</td><td class="num">-1.2346</td></tr>
    <tr><td>steps</td><td class="num">10</td></tr>
    <tr><td>fit time (s)</td><td class="num">3.1</td></tr>
    </tbody></table></div>
    """
    is_mapping = isinstance(rows, Mapping)
    body_rows = list(rows.items()) if is_mapping else [tuple(r) for r in rows]
    if is_mapping:
        given = dict(kinds or {})
        row_kinds = [["auto", given.get(str(name), "seconds" if str(name).endswith("(s)")
                                         else "auto")] for name, _ in body_rows]
    else:
        cols = list(kinds) if kinds is not None else [
            "seconds" if str(h).endswith("(s)") else "auto" for h in headers]
        if len(cols) != len(headers):
            raise ValueError(f"got {len(cols)} kinds for {len(headers)} columns")
        row_kinds = [cols] * len(body_rows)
    out = ['<div class="table-wrap"><table><thead><tr>'
           + "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
           + "</tr></thead><tbody>"]
    for row, row_kind in zip(body_rows, row_kinds, strict=True):
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells, expected {len(headers)}")
        cells = []
        for cell, kind in zip(row, row_kind, strict=False):
            is_num = (isinstance(cell, numbers.Number | np.generic | torch.Tensor) and not (
                isinstance(cell, bool))) or (isinstance(cell, str) and bool(
                    _NUMERIC_TEXT.fullmatch(cell)))
            cls = ' class="num"' if is_num else ""
            cells.append(f"<td{cls}>{html.escape(format_value(cell, precision, kind))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


class Report:
    """An HTML page built section by section, rendered as one self-contained file.

    >>> rep = Report("Run")
    >>> rep.add_paragraph("x < y & z")
    >>> "<p>x &lt; y &amp; z</p>" in rep.render()
    True
    """

    def __init__(self, title: str):
        self.title = str(title)
        self._parts: list[str] = []
        self.warnings: list[str] = []  # the text of every warning box, in page order

    def add_heading(self, text: str, level: int = 2) -> None:
        """Add a heading ``<h{level}>`` (level 2 for sections, 3 for subsections).

        >>> r = Report("t"); r.add_heading("PPCA"); "<h2>PPCA</h2>" in r.render()
        True
        """
        if level not in (2, 3, 4):
            raise ValueError(f"level must be 2, 3 or 4, got {level!r}")
        self._parts.append(f"<h{level}>{html.escape(str(text))}</h{level}>")

    def add_paragraph(self, text: str, note: bool = False) -> None:
        """Add a paragraph of plain (escaped) text; ``note=True`` renders it smaller and grey.

        >>> r = Report("t"); r.add_paragraph("hello", note=True)
        >>> '<p class="note">hello</p>' in r.render()
        True
        """
        cls = ' class="note"' if note else ""
        self._parts.append(f"<p{cls}>{html.escape(str(text))}</p>")

    def add_html(self, fragment: str) -> None:
        """Add a raw, trusted HTML fragment as it is.

        >>> r = Report("t"); r.add_html("<hr>"); "<hr>" in r.render()
        True
        """
        self._parts.append(str(fragment))

    def add_table(self, rows, headers: Sequence[str] = ("metric", "value"),
                  precision: int = 4, kinds=None) -> None:
        """Add a :func:`metrics_table` (``kinds``: how its numbers are written).

        >>> r = Report("t"); r.add_table({"a": 1.0}); "<td>a</td>" in r.render()
        True
        """
        self._parts.append(metrics_table(rows, headers, precision, kinds))

    def add_warning(self, text: str, title: str = "Do not trust these numbers yet") -> None:
        """Add a visible warning box: ``title`` in bold, then ``text`` (plain, escaped; blank
        lines separate paragraphs; `backticks` mark code, never broken across lines).
        Sections put it next to the figure it concerns.

        >>> r = Report("t"); r.add_warning("a < b")
        >>> '<div class="warning" role="note"><p><strong>Do not trust' in r.render()
        True
        >>> "a &lt; b" in r.render(), r.warnings
        (True, ['a < b'])
        """
        self.warnings.append(str(text))
        paragraphs = [p.strip() for p in str(text).split("\n\n") if p.strip()]
        body = "".join("<p>" + "".join(
            f"<code>{html.escape(piece)}</code>" if i % 2 else html.escape(piece)
            for i, piece in enumerate(p.split("`"))) + "</p>" for p in paragraphs)
        self._parts.append(f'<div class="warning" role="note"><p><strong>'
                           f"{html.escape(str(title))}</strong></p>{body}</div>")

    def add_figure(self, fig: Figure, caption: str | None = None, alt: str | None = None) -> None:
        """Embed a figure as a base64 PNG (see :func:`figure_to_html`).

        >>> r = Report("t"); r.add_figure(new_figure(1, 1), caption="c")
        >>> "<figcaption>c</figcaption>" in r.render()
        True
        """
        self._parts.append(figure_to_html(fig, alt=alt or caption or "figure", caption=caption))

    def render(self) -> str:
        """The whole page as a string.

        >>> "<title>t</title>" in Report("t").render()
        True
        """
        title = html.escape(self.title)
        body = "\n".join(self._parts)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            f"<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
        )

    def save(self, path: str | os.PathLike) -> str:
        """Write the page to ``path`` (UTF-8) atomically, creating parent directories;
        returns the path.

        >>> import tempfile, pathlib
        >>> p = Report("t").save(pathlib.Path(tempfile.mkdtemp()) / "r.html")
        >>> p.endswith("r.html")
        True
        """
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write(self.render())
        return os.fspath(path)
