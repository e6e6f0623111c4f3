"""The numbers a tutorial's text quotes agree with the outputs saved in the same notebook.

Convention: ``QUOTES`` holds, for every notebook in tutorials/, the sentences of its markdown
that quote a printed number, each as a :class:`Quote`:

- ``text``: a regex on the notebook's markdown (all markdown cells, whitespace collapsed to
  single spaces) whose groups capture the quoted numbers ("0.51", "1,438", "nan", or a word
  from ``WORDS`` such as "a quarter"); it must match exactly once, so rewording a quoted
  sentence fails here until the entry is updated;
- ``output``: a regex on the saved outputs (printed text and text results, figures left out)
  whose groups capture the numbers the text was taken from; it must match at least once;
- ``derive``: how the output's numbers become the quoted ones (default: every match's groups
  are compared with the quote), given the list of all matches as tuples of floats;
- ``tol``: the allowed absolute difference (one, or one per quoted number); by default half
  a unit in the quote's last digit (the quote is the output rounded); widen it for "about";
- ``compare``: "=" (within ``tol``), "<" or ">" (the output's number below / above the quote).

Only the saved notebooks are read (nothing is executed), so this runs in well under a second.
A notebook whose text quotes no output has an empty list, and says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pytest

TUTORIALS = Path(__file__).parents[1] / "tutorials"

WORDS = {"half": 0.5, "twice": 2.0, "a quarter": 0.25, "a third": 1 / 3, "two thirds": 2 / 3,
         "a fifth": 0.2, "a tenth": 0.1, "one": 1.0}

NUMBER = r"([-+]?\d[\d,]*(?:\.\d+)?|nan)"  # a printed number, as a capture group


@dataclass(frozen=True)
class Quote:
    text: str
    output: str
    derive: Callable[[list[tuple[float, ...]]], tuple[float, ...]] | None = None
    tol: float | tuple[float, ...] | None = None  # one for all, or one per number
    compare: str = "="


def _slope(values, ks=(1, 4, 16, 64)) -> float:
    return float(np.polyfit(np.log(ks), np.log(values), 1)[0])


QUOTES: dict[str, list[Quote]] = {
    # The text states the claims and the closed forms; it quotes none of the printed numbers.
    "01_ppca_classical_vs_amortized.ipynb": [],
    "02_sparse_coding_natural_images.ipynb": [
        Quote(r"reaches its ceiling log N = (\d+\.\d) nats",
              r"simulated from the model\s+I =\s+(\d+\.\d) nats"),
        Quote(r"On the natural patches the gap is about (twice) as large",
              r"natural patches .*?KL\(q\(x_i\) \|\| r\(x_i\)\): mean (\d\.\d+)"
              r"(?s:.*?)simulated from the model .*?: mean (\d\.\d+)",
              derive=lambda m: (m[0][0] / m[0][1],), tol=0.3),
        Quote(r"its ELBO is higher by about (\d) nats per natural patch and about (\d) per "
              r"simulated patch",
              r"natural patches\s+ELBO mean-field\s+(-?\d+\.\d+), flow\s+(-?\d+\.\d+)"
              r"(?s:.*?)simulated from the model\s+ELBO mean-field\s+(-?\d+\.\d+), flow\s+"
              r"(-?\d+\.\d+)",
              derive=lambda m: (m[0][1] - m[0][0], m[0][3] - m[0][2]), tol=0.5),
        Quote(r"simulated patches it moves the spread of the average posterior from (\d\.\d\d) "
              r"to (\d\.\d\d), most of the way to the prior's (\d\.\d\d)",
              r"simulated from the model\s+ELBO.*?mean-field (\d\.\d\d), flow (\d\.\d\d) "
              r"\(prior (\d\.\d\d)\)"),
        Quote(r"On the natural patches it moves from (\d\.\d\d) to (\d\.\d\d) and stays",
              r"natural patches\s+ELBO.*?mean-field (\d\.\d\d), flow (\d\.\d\d) "),
    ],
    "03_bayes_loop.ipynb": [
        Quote(r"\(the variance ratio q/r below (1)\)",
              r"variance ratio q/r per coordinate: \[(\d\.\d+) (\d\.\d+)\]",
              derive=lambda m: (max(m[0]),), compare="<"),
    ],
    "04_tighter_bounds.ipynb": [
        Quote(r"every objective with 16 particles gains about (a quarter) of a nat",
              r"(?m)^(?!VAE )[^\n]*?(?:-\d+\.\d+\s+){4}\+(\d\.\d+) \+-", tol=0.05),
        Quote(r"their test IWAE16 bounds lie above IWAE\(16\)'s, but by less than (a tenth) of",
              # test IWAE16 of IWAE(16) (the first row matched), then of MIWAE, PIWAE, CIWAE
              r"\n(?:IWAE\(16\)|MIWAE\S*|PIWAE\S*|CIWAE\S*)\s+-\d+\.\d+\s+-\d+\.\d+\s+(-\d+\.\d+)",
              derive=lambda m: (max(b - m[0][0] for (b,) in m[1:]),), compare="<"),
        Quote(r"grows with K like the sqrt\(K\) .*?\(fitted slope close to (0\.5)\)",
              r"IWAE\s+model SNR \[[^]]*\] slope (\d\.\d+)", tol=0.1),
        Quote(r"with a fitted slope somewhat shallower than the theorem's asymptotic (-0\.5)",
              r"IWAE\s+model SNR .*; guide SNR \[[^]]*\] slope (-\d\.\d+)", compare=">"),
        Quote(r"The encoder's SNR under MIWAE falls close to 1/K \(fitted slope near (-1)\)",
              r"(?m)^MIWAE\(M,K\)\s+model SNR .*; guide SNR "
              r"\[([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+)\]",
              derive=lambda m: (_slope(m[0]),), tol=0.15),
    ],
    "05_information_and_representation.ipynb": [
        Quote(r"Only beta = (1) maximizes the ELBO itself \(it has the smallest -ELBO",
              r"\n\s+(\d\.\d) \|.*\|\s+(\d+\.\d+)\n",
              derive=lambda m: (min(m, key=lambda r: r[1])[0],)),
        Quote(r"it was about (0\.07) at beta = 1 \(KL\(q\(z\) \|\| r\(z\)\) about (0\.4) nats\) "
              r"and about (0\.14) at beta = 0\.2 \(about (6) nats\)",
              r"beta=1: KL\(q\(z\)\|\|r\(z\)\) =\s+(\d\.\d+) nats; .* from q\(z\): (\d\.\d+), "
              r"from r\(z\): (\d\.\d+)\nbeta=0\.2: KL\(q\(z\)\|\|r\(z\)\) =\s+(\d\.\d+) nats; "
              r".* from q\(z\): (\d\.\d+), from r\(z\): (\d\.\d+)",
              derive=lambda m: (m[0][1] - m[0][2], m[0][0], m[0][4] - m[0][5], m[0][3]),
              tol=(0.02, 0.1, 0.02, 0.5)),
        Quote(r"at least as good as the VAE's \(better by about (a third) of a nat",
              r"MLP \(beta=1\)\s+\|\s+(-\d+\.\d+)(?s:.*)autoregressive\s+\|\s+(-\d+\.\d+)",
              derive=lambda m: (m[0][1] - m[0][0],), tol=0.1),
        Quote(r"the MLP decoder's rises to about (4) nats",
              r"MLP \(beta=1\)\s+\|.*\|(?:\s+\d+\.\d+){2}\s+(\d+\.\d+)", tol=0.5),
        Quote(r"jointly tell at least about (two thirds) of the entropy of x and of y",
              r"\n[xy]\s+\d\.\d+ \|.*\|\s+\d\.\d+ \((\d\.\d+)\)", tol=0.05),
        Quote(r"no single coordinate tells more than about (a fifth)",
              r"\n[xy]\s+\d\.\d+ \| z\[\d\]\s+\d\.\d+ \((\d\.\d+)\)", tol=0.03),
        Quote(r"\(here about (6) nats, against a ceiling log N of (8)\)",
              r"I_q\(n;z\) (\d\.\d+) ± \d\.\d+ \(ceiling (\d\.\d+)\)", tol=0.5),
        Quote(r"small data \((1,438) training digits",
              r"log N = \d\.\d+ nats \(N = (\d+)\)"),
    ],
    "06_your_own_model.ipynb": [
        Quote(r"the model's SNR grows like sqrt\(K\) \(fitted slope (\d\.\d+) for both",
              r"model SNR \[[^]]*\] slope (\d\.\d+)"),
        Quote(r"the guide's SNR falls from (\d\.\d) at K = 1 .*? reports (0) at K = 4 and 16 "
              r"and (\d\.\d+) at K = 64, and a log-log slope cannot be fitted through zeros, so "
              r"it is reported as (nan)",
              r"IWAE\s+model SNR .*; guide SNR \[([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+)\] "
              r"slope (\S+)",
              derive=lambda m: (m[0][0], max(m[0][1:3]), m[0][3], m[0][4])),
        Quote(r"DReG keeps the guide's SNR of order one at every K \(between (\d\.\d+) and "
              r"(\d\.\d+), slope (-?\d\.\d+)\)",
              r"DReG\s+model SNR .*; guide SNR \[([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+)\] "
              r"slope (\S+)",
              derive=lambda m: (min(m[0][:4]), max(m[0][:4]), m[0][4])),
    ],
}


def _number(s: str) -> float:
    return WORDS[s] if s in WORDS else float(s.replace(",", ""))


def _rounding(s: str) -> float:
    """Half a unit in the last digit of a quoted number (plus float slack)."""
    decimals = len(s.split(".")[1]) if "." in s else 0
    return 0.5 * 10.0 ** -decimals + 1e-9


def _markdown(nb) -> str:
    text = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return re.sub(r"\s+", " ", text)


def _outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out and "image/png" not in out.data:
                parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def _agree(quoted: float, found: float, tol: float, compare: str) -> bool:
    if math.isnan(quoted) or math.isnan(found):
        return math.isnan(quoted) and math.isnan(found)
    if compare == "<":
        return found < quoted
    if compare == ">":
        return found > quoted
    return abs(found - quoted) <= tol


def test_every_notebook_is_listed():
    assert sorted(QUOTES) == sorted(p.name for p in TUTORIALS.glob("*.ipynb"))


CASES = [(name, i, q) for name, quotes in QUOTES.items() for i, q in enumerate(quotes)]


@pytest.mark.parametrize(("notebook", "index", "quote"), CASES,
                         ids=[f"{n[:2]}-{i}" for n, i, _ in CASES])
def test_quoted_number_agrees_with_saved_output(notebook, index, quote):
    nb = nbformat.read(TUTORIALS / notebook, as_version=4)
    text, outputs = _markdown(nb), _outputs(nb)
    in_text = list(re.finditer(quote.text, text))
    assert len(in_text) == 1, (f"{notebook}: the text should quote this exactly once, found "
                               f"{len(in_text)}: {quote.text!r}")
    quoted = in_text[0].groups()
    matches = [tuple(_number(g) for g in m.groups()) for m in re.finditer(quote.output, outputs)]
    assert matches, f"{notebook}: no saved output matches {quote.output!r}"
    found_sets = [quote.derive(matches)] if quote.derive else matches
    for found in found_sets:
        assert len(found) == len(quoted), (quoted, found)
        tols = (quote.tol if isinstance(quote.tol, tuple) else
                [quote.tol if quote.tol is not None else _rounding(q) for q in quoted])
        for q, f, tol in zip(quoted, found, tols, strict=True):
            assert _agree(_number(q), f, tol, quote.compare), (
                f"{notebook}: the text quotes {q} ({quote.compare} within {tol:g}) in "
                f"{in_text[0].group(0)!r}, the saved output gives {f:.6g}")


def test_the_check_catches_a_wrong_quote():
    """The 06 sentence as it read before it was fixed (SNR 'estimated as 0') fails the check
    against the saved output (the K = 64 value is 0.048, the K = 1 value 1.474)."""
    nb = nbformat.read(TUTORIALS / "06_your_own_model.ipynb", as_version=4)
    quote = QUOTES["06_your_own_model.ipynb"][1]
    matches = [tuple(_number(g) for g in m.groups())
               for m in re.finditer(quote.output, _outputs(nb))]
    wrong = ("0", "0", "0", "nan")  # "estimated as 0, slope nan", at every K
    found = quote.derive(matches)
    assert not all(_agree(_number(q), f, _rounding(q), "=")
                   for q, f in zip(wrong, found, strict=True))
