"""What the diagnostics' figures say matches the numbers they are drawn from."""

import math

import torch

from pyro_lvm.diagnostics import Evidence
from pyro_lvm.diagnostics.plots import plot_evidence_diagnostics


def test_khat_share_above_the_threshold_does_not_count_unestimable_values():
    """Regression: the k-hat panel's "% above 0.7" counted NaN k-hats (and non-finite
    log p(x)) as above the line; NaN is now reported apart."""
    ev = Evidence(torch.zeros(4), torch.full((4,), 50.0),
                  torch.tensor([0.1, math.nan, 0.9, 0.2], dtype=torch.double), 100)
    label = plot_evidence_diagnostics(ev).axes[1].get_xlabel()
    assert "25.0% above 0.7" in label and "1 not estimable" in label
    clean = Evidence(torch.zeros(2), torch.ones(2), torch.tensor([0.1, 0.8]), 100)
    assert plot_evidence_diagnostics(clean).axes[1].get_xlabel() == "Pareto k-hat (50.0% above 0.7)"


def _all_text_sizes(fig):
    fig.canvas.draw()
    return [t.get_fontsize() for t in fig.findobj(lambda a: hasattr(a, "get_fontsize")
                                                   and hasattr(a, "get_text")
                                                   and a.get_text() and a.get_visible())]


def _check_legible(fig):
    from pyro_lvm.diagnostics.plots import MAX_WIDTH, MIN_FONT_SIZE

    assert fig.get_figwidth() <= MAX_WIDTH
    assert min(_all_text_sizes(fig)) >= MIN_FONT_SIZE


def test_bayes_loop_figure_labels_every_axis_and_says_which_coordinates():
    """Regression: no axis labels, grey bands never named, 4 of 8 coordinates shown silently,
    a 7-point legend on a figure shrunk to the page."""
    import numpy as np

    from pyro_lvm.diagnostics.bayes_loop import BayesLoopResult
    from pyro_lvm.diagnostics.plots import bayes_loop_caption, plot_bayes_loop
    from pyro_lvm.diagnostics.two_sample import TwoSampleResult

    rng = np.random.default_rng(0)
    chi2 = np.array([.5, .4, 1e-9, .3, .2, 1e-3, .9, 1e-5])
    r = BayesLoopResult(
        ranks=rng.integers(0, 100, (300, 8)), num_posterior_samples=99, rank_bins=20,
        chi2_p=chi2, ks_p=np.ones(8), two_sample=TwoSampleResult(0.0, 0.5, 10),
        mean_z=np.zeros(8), log_var_ratio_z=np.zeros(8), effect_mean=np.zeros(8),
        variance_ratio=np.ones(8), p_value=1e-8, level=0.01, passed=False,
        posterior_draws=torch.randn(300, 8), prior_draws=torch.randn(300, 8),
        coordinate_names=[f"z[{i}]" for i in range(8)])
    fig = plot_bayes_loop(r, max_dims=4)
    assert all(ax.get_xlabel() for ax in fig.axes)
    assert [fig.axes[i].get_ylabel() for i in (0, 4, 8)] == [
        "simulations", "ECDF - uniform CDF", "density"]
    # the least uniform coordinates, in order, and the figure says it shows 4 of 8
    assert [ax.get_title().split()[0] for ax in fig.axes[:4]] == ["z[2]", "z[4]", "z[5]",
                                                                  "z[7]"]
    assert "showing 4 of 8 coordinates" in fig.texts[0].get_text()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "99% band if uniform", "prior r(z)", "average posterior q(z)"]
    _check_legible(fig)
    caption = bayes_loop_caption(r, 4)
    assert "grey band" in caption and "Kolmogorov" in caption and "Showing 4 of 8" in caption


def test_diagnostic_figures_label_their_axes_and_stay_legible():
    from types import SimpleNamespace

    from pyro_lvm.diagnostics.plots import plot_aggregate_vs_prior, plot_kl_per_dim

    fig = plot_aggregate_vs_prior(torch.randn(400, 8), torch.randn(400, 8), max_dims=6)
    assert all(ax.get_xlabel() for ax in fig.axes)
    assert "showing 6 of 8 coordinates" in fig.texts[0].get_text()
    _check_legible(fig)
    ev = Evidence(torch.zeros(50), torch.rand(50) * 100, torch.rand(50), 100)
    fig = plot_evidence_diagnostics(ev, ess_line=10)
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    _check_legible(fig)
    info = SimpleNamespace(marginal_kl_per_dim=torch.tensor([0.1, 0.02]),
                           unit_activity=torch.tensor([1.0, 0.001]))
    fig = plot_kl_per_dim(info)
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


def test_kl_panel_names_the_real_reason_it_is_empty():
    """Regression: PPCA's panel said "prior does not factorize over coordinates"; its prior
    does. Its full-covariance guide now has per-coordinate marginals (bars); a hierarchical
    guide has none, and the panel says so rather than blaming the prior."""
    from pyro_lvm.diagnostics import information
    from pyro_lvm.diagnostics.plots import plot_kl_per_dim
    from pyro_lvm.models import PPCA, TwoLayerVAE

    ppca = PPCA(4, 2)
    info = information(ppca.model, ppca.guide, ppca.sample(100))
    panel = plot_kl_per_dim(info).axes[0]
    assert info.marginal_kl_per_dim.shape == (2,) and len(panel.patches) == 2
    assert not panel.texts
    two = TwoLayerVAE(6, latent_dims=(2, 1), hidden=((5,), (3,)))
    info = information(two.model, two.guide, (torch.rand(40, 6) < 0.4).float())
    text = " ".join(t.get_text() for t in plot_kl_per_dim(info).axes[0].texts)
    assert "closed-form 1-D marginals" in text and "prior does not" not in text
