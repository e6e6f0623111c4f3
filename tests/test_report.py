"""The report warns when its numbers should not be trusted, formats numbers by kind, and its
figures behave like ordinary matplotlib figures without piling up in pyplot."""

import gc
import math
import weakref

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from pyro_lvm import figures
from pyro_lvm.diagnostics import Evidence
from pyro_lvm.diagnostics.bayes_loop import BayesLoopResult
from pyro_lvm.diagnostics.two_sample import TwoSampleResult
from pyro_lvm.infer import History
from pyro_lvm.report import Report, format_value, metrics_table
from pyro_lvm.report_sections import (
    CONVERGENCE_MIN_EPOCHS,
    ESS_SHARE_LIMIT,
    KHAT_SHARE_LIMIT,
    PPCA_GAP_TOLERANCE,
    bayes_loop_section,
    bayes_loop_warning,
    evidence_warning,
    rank_shape,
    still_falling,
    training_warning,
)

assert matplotlib.get_backend().lower() == "agg"  # the tests run headless


def _history(losses, stop_reason="completed"):
    n = len(losses)
    return History(epoch=list(range(1, n + 1)), train_loss=list(losses), val_loss=[math.nan] * n,
                   epoch_time=[0.1] * n, stop_reason=stop_reason)


# -- training not converged --------------------------------------------------------------------
def test_a_curve_still_falling_is_flagged_and_a_flat_noisy_one_is_not():
    rng = np.random.default_rng(0)
    epochs = np.arange(100)
    falling = 30 * np.exp(-epochs / 60) + rng.normal(0, 0.05, 100)   # still dropping ~1.6/10
    flat = 10 + 30 * np.exp(-epochs / 5) + rng.normal(0, 0.05, 100)  # converged, noisy
    assert still_falling(_history(falling))["falling"] is True
    assert still_falling(_history(falling))["tail"] == 10
    assert still_falling(_history(flat))["falling"] is False
    assert "has not converged" in training_warning(_history(falling))
    assert training_warning(_history(flat)) is None


def test_a_tiny_steady_drop_below_the_tolerance_is_not_flagged():
    # perfectly smooth (zero noise) but the tail drops by 0.001 nats: converged in practice
    assert still_falling(_history(5 - 1e-4 * np.arange(50)))["falling"] is False
    # noisy with a real drop that is within the noise: not flagged either
    rng = np.random.default_rng(1)
    noisy = 5 - 0.01 * np.arange(50) + rng.normal(0, 1.0, 50)
    assert still_falling(_history(noisy))["falling"] is False


def test_too_few_epochs_and_early_stopping():
    short = _history([3.0, 2.0][: CONVERGENCE_MIN_EPOCHS - 1])
    assert still_falling(short)["falling"] is None
    assert "too few" in training_warning(short)
    stopped = _history(100 - np.arange(20.0), stop_reason="early stopping: no better ...")
    assert training_warning(stopped) is None


def test_ppca_gap_warning():
    flat = _history([1.0] * 30)
    assert training_warning(flat, ppca_gap=PPCA_GAP_TOLERANCE / 2) is None
    text = training_warning(flat, ppca_gap=17.8)
    assert "17.800 nats/datapoint below the closed-form" in text


# -- importance-sampled log p(x) --------------------------------------------------------------
def test_evidence_warning_on_high_khat_or_low_ess():
    n, particles = 100, 1000
    good = Evidence(torch.zeros(n), torch.full((n,), 500.0), torch.full((n,), 0.3), particles)
    assert evidence_warning(good) is None
    khat = torch.full((n,), 0.3)
    khat[: int(0.746 * n)] = 0.9  # 74.6% above the threshold, as the sprites VAE
    bad_khat = Evidence(torch.zeros(n), torch.full((n,), 500.0), khat, particles)
    text = evidence_warning(bad_khat)
    assert "74.0% of the test points have Pareto k-hat > 0.7" in text
    assert "more particles" in text
    low_ess = Evidence(torch.zeros(n), torch.full((n,), 29.0), torch.full((n,), 0.3), particles)
    text = evidence_warning(low_ess)
    assert "median effective sample size is 29 of 1000" in text and "better guide" in text
    # exactly at the limits: not flagged
    edge_k = torch.full((n,), 0.3)
    edge_k[: int(KHAT_SHARE_LIMIT * n)] = 0.9
    edge = Evidence(torch.zeros(n), torch.full((n,), ESS_SHARE_LIMIT * particles), edge_k,
                    particles)
    assert evidence_warning(edge) is None


# -- Bayes' loop -------------------------------------------------------------------------------
def _loop(ranks, passed, big_l=99):
    ranks = np.asarray(ranks)
    n, d = ranks.shape
    p = np.full(d, 0.5 if passed else 1e-30)
    return BayesLoopResult(
        ranks=ranks, num_posterior_samples=big_l, rank_bins=20, chi2_p=p, ks_p=p,
        two_sample=TwoSampleResult(statistic=0.0, p_value=0.5, num_permutations=10),
        mean_z=np.zeros(d), log_var_ratio_z=np.zeros(d), effect_mean=np.zeros(d),
        variance_ratio=np.ones(d), p_value=0.5 if passed else 1e-30, level=0.01, passed=passed,
        posterior_draws=torch.randn(n, d, dtype=torch.float64),
        prior_draws=torch.randn(n, d, dtype=torch.float64),
        coordinate_names=[f"z[{i}]" for i in range(d)])


def test_rank_shapes():
    rng = np.random.default_rng(0)
    assert rank_shape(rng.integers(0, 100, 3000), 99) == "flat"
    # overconfident posterior: the truth is often in the tails of q
    truth = rng.normal(size=3000)
    narrow = (rng.normal(0, 0.5, (99, 3000)) < truth).sum(0)
    wide = (rng.normal(0, 2.0, (99, 3000)) < truth).sum(0)
    biased_low = (rng.normal(-0.5, 1.0, (99, 3000)) < truth).sum(0)
    assert rank_shape(narrow, 99) == "∪"
    assert rank_shape(wide, 99) == "∩"
    assert rank_shape(biased_low, 99) == "slope up"


def test_bayes_loop_warning_appears_only_for_a_failing_loop():
    rng = np.random.default_rng(0)
    good = _loop(rng.integers(0, 100, (500, 8)), passed=True)
    bad = _loop(np.concatenate([np.zeros((250, 8)), np.full((250, 8), 99)]).astype(int), False)
    assert bayes_loop_warning("good", good) is None
    text = bayes_loop_warning("bad", bad)
    for words in ("∪", "∩", "slope", "tutorials/03_bayes_loop.ipynb", "richer guide",
                  "full-covariance", "flow", "train longer", "too narrow",
                  "AmortizedMultivariateNormal", "inference_gaps"):
        assert words in text, words
    rep = Report("t")
    bayes_loop_section(rep, {"good": good, "bad": bad})
    html = rep.render()
    assert html.count('class="warning"') == 1 and rep.warnings == [text]
    assert "Showing 4 of 8 coordinates" in html
    rep = Report("t")
    bayes_loop_section(rep, {"good": good})
    assert rep.warnings == [] and 'class="warning"' not in rep.render()


# -- formatting --------------------------------------------------------------------------------
def test_numbers_are_formatted_by_kind_and_never_wrapped():
    assert format_value(1.007e-44, kind="p") == "1.0e-44"
    assert format_value(0.18634, kind="p") == "0.186"
    assert format_value(12.34567, kind="seconds") == "12.3"
    assert format_value(-21.32851, kind="nats") == "-21.3285"
    with pytest.raises(ValueError, match="kind"):
        format_value(1.0, kind="furlongs")
    table = metrics_table([("m", 1.007e-44, 3.14159)], headers=("model", "p", "time (s)"),
                          kinds=("auto", "p", "seconds"))
    assert '<td class="num">1.0e-44</td>' in table and '<td class="num">3.1</td>' in table
    assert "white-space: nowrap" in Report("t").render()


def test_warning_box_is_visible_and_escaped():
    rep = Report("t")
    rep.add_warning("a <b>\n\nrun `pyro-lvm fit --epochs 200`")
    html = rep.render()
    assert '<div class="warning" role="note">' in html and "div.warning {" in html
    assert "a &lt;b&gt;" in html and "<code>pyro-lvm fit --epochs 200</code>" in html


# -- figures: savefig, show, no pile-up in pyplot ----------------------------------------------
def test_figures_save_show_and_are_not_kept_alive_by_pyplot(tmp_path):
    plt.close("all")
    refs = []
    for _ in range(200):
        fig = _history([3.0, 2.0, 1.5]).plot()
        refs.append(weakref.ref(fig))
    fig.savefig(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
    fig.show()  # no AttributeError (Agg: nothing to show)
    plt.show()  # does not raise
    del fig
    gc.collect()
    assert plt.get_fignums() == []
    assert sum(r() is not None for r in refs) == 0


def test_under_an_interactive_backend_pyplot_holds_few_figures(monkeypatch):
    """With a backend that can show figures, new figures join pyplot (so plt.show() shows
    them), but pyplot never holds more than MAX_PYPLOT_FIGURES of them."""
    plt.close("all")
    monkeypatch.setattr(figures, "interactive_backend", lambda: "module://a_gui_backend")
    refs = [weakref.ref(_history([2.0, 1.0]).plot()) for _ in range(30)]
    try:
        assert len(plt.get_fignums()) == figures.MAX_PYPLOT_FIGURES
        gc.collect()
        alive = [r() for r in refs if r() is not None]
        assert len(alive) == figures.MAX_PYPLOT_FIGURES  # the older ones were released
        newest = alive[-1]
        assert plt.gcf() is newest
        newest.savefig(__import__("io").BytesIO(), format="png")
    finally:
        plt.close("all")


def test_notebook_display_releases_the_figure_from_pyplot(monkeypatch):
    """In Jupyter a figure is displayed once: displaying it removes it from pyplot, so the
    inline backend does not show it again at the end of the cell."""
    import IPython.display

    plt.close("all")
    monkeypatch.setattr(figures, "interactive_backend", lambda: "inline")
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    fig = _history([2.0, 1.0]).plot()
    assert plt.get_fignums() != []
    fig._ipython_display_()
    assert plt.get_fignums() == []
    assert len(shown) == 1 and shown[0].data.startswith(b"\x89PNG")
    fig.show()  # inline: displays it (again, on request)
    assert len(shown) == 2 and shown[1] is fig
