"""Figures of the diagnostics, kept apart from the numbers (:mod:`pyro_lvm.figures`).

Every axis is labelled; bands and reference lines are named in the docstrings (and the
report's captions). Figures are at most :data:`MAX_WIDTH` inches wide with text of at least
:data:`MIN_FONT_SIZE` points, so that they stay legible at a report's width (about 10 in).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..figures import subplots

#: Widest figure, in inches (a report shows about 10 inches at 100 dpi without shrinking).
MAX_WIDTH = 10.0
#: Smallest font size of any text in a figure, in points (legends included).
MIN_FONT_SIZE = 8


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
    fig, axes = subplots(9.0, 3.4, ncols=2)
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
    :func:`~pyro_lvm.diagnostics.snr_versus_particles`. Each line has its own marker and
    dash pattern, so that estimators with identical SNR (e.g. the model's gradient under
    IWAE and DReG) stay visible on top of each other.

    >>> r = {"particles": [1, 10], "snr": {"model": [1., 3.], "guide": [1., .3]},
    ...      "slope": {"model": 0.48, "guide": -0.52}}
    >>> fig = plot_snr_versus_particles({"IWAE": r})
    >>> fig.axes[1].get_legend().get_texts()[0].get_text()
    'IWAE (slope -0.52)'
    """
    fig, axes = subplots(9.0, 3.4, ncols=2)
    for ax, group in zip(axes, ("model", "guide"), strict=True):
        for i, (label, r) in enumerate(results.items()):
            ax.plot(r["particles"], r["snr"][group], marker="os^Dv"[i % 5], ms=4 + i % 3,
                    ls=("-", "--", ":", "-.")[i % 4], mfc="none" if i else None,
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


def plot_aggregate_vs_prior(posterior_draws, prior_draws, max_dims: int = 6,
                            title: str | None = None):
    """Aggregate posterior q(z) against the prior p(z): 1-D marginal histograms of the first
    ``max_dims`` coordinates (the title says "showing k of D" when there are more), and both
    sets of draws projected on q's two leading principal axes. Panels wrap at 4 per row.

    >>> import torch
    >>> fig = plot_aggregate_vs_prior(torch.randn(500, 3), torch.randn(500, 3))
    >>> len(fig.axes), fig.axes[0].get_xlabel(), fig.axes[3].get_ylabel()
    (4, 'z[0]', 'principal axis 2 of q(z)')
    >>> fig = plot_aggregate_vs_prior(torch.randn(500, 8), torch.randn(500, 8), max_dims=3)
    >>> fig.texts[0].get_text()
    'Aggregate posterior vs prior: marginals of z[0..2] (showing 3 of 8 coordinates)'
    """
    import numpy as np
    import torch

    q, p = (torch.as_tensor(d).detach().cpu().double() for d in (posterior_draws, prior_draws))
    total = q.shape[1]
    dims = min(total, max_dims)
    panels = dims + 1
    ncols = min(4, panels)
    nrows = -(-panels // ncols)
    fig, axes = subplots(min(MAX_WIDTH, 2.45 * ncols), 2.3 * nrows + 0.7, ncols=ncols,
                         nrows=nrows)
    axes = np.asarray(axes).reshape(-1)
    for ax in axes[panels:]:
        fig.delaxes(ax)
    for i in range(dims):
        ax = axes[i]
        lo = float(torch.quantile(torch.cat([q[:, i], p[:, i]]), 0.005))
        hi = float(torch.quantile(torch.cat([q[:, i], p[:, i]]), 0.995))
        ax.hist(p[:, i].numpy(), bins=40, range=(lo, hi), density=True, alpha=0.5,
                color="C0", label="prior p(z)")
        ax.hist(q[:, i].numpy(), bins=40, range=(lo, hi), density=True, alpha=0.5,
                color="C1", label="aggregate posterior q(z)")
        ax.set_xlabel(f"z[{i}]", fontsize=9)
        if i % ncols == 0:
            ax.set_ylabel("density", fontsize=9)
        ax.tick_params(labelsize=MIN_FONT_SIZE)
    ax = axes[dims]
    centered = q - q.mean(0)
    if q.shape[1] >= 2:
        _, _, v = torch.linalg.svd(centered, full_matrices=False)
        basis = v[:2].T
    else:
        basis = torch.ones(1, 1, dtype=q.dtype)
    proj_p, proj_q = (p - q.mean(0)) @ basis, centered @ basis
    if basis.shape[1] == 1:
        proj_p = torch.cat([proj_p, torch.zeros_like(proj_p)], 1)
        proj_q = torch.cat([proj_q, torch.zeros_like(proj_q)], 1)
    ax.scatter(proj_p[:, 0], proj_p[:, 1], s=2, alpha=0.3, color="C0")
    ax.scatter(proj_q[:, 0], proj_q[:, 1], s=2, alpha=0.3, color="C1")
    ax.set_xlabel("principal axis 1 of q(z)", fontsize=9)
    ax.set_ylabel("principal axis 2 of q(z)", fontsize=9)
    ax.tick_params(labelsize=MIN_FONT_SIZE)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=2, fontsize=9, frameon=False)
    shown = f" (showing {dims} of {total} coordinates)" if dims < total else ""
    fig.suptitle(title or f"Aggregate posterior vs prior: marginals of z[0..{dims - 1}]{shown}",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_kl_per_dim(information, title: str | None = None):
    """Bars of KL(q(z_i) || p(z_i)) per latent coordinate (+- 2 standard errors), and each
    unit's activity Cov_n(E_q[z_i | x_n]) (Burda et al.'s active units: above
    ``ACTIVE_UNIT_THRESHOLD``).

    >>> import torch
    >>> from types import SimpleNamespace
    >>> info = SimpleNamespace(marginal_kl_per_dim=torch.tensor([0.1, 0.02]),
    ...                        unit_activity=torch.tensor([1.0, 0.001]))
    >>> fig = plot_kl_per_dim(info)
    >>> len(fig.axes), fig.axes[0].get_ylabel()
    (2, 'KL (nats)')

    Without per-coordinate KL (``marginal_kl_per_dim`` None) the left panel says why: the
    guide's posteriors q(z|x) have no closed-form 1-D marginals (a hierarchical guide;
    :func:`~pyro_lvm.diagnostics.information` needs them for the total correlation too), or
    the prior does not factorize over coordinates.
    """
    from .information import ACTIVE_UNIT_THRESHOLD as active

    activity = information.unit_activity
    kl = information.marginal_kl_per_dim
    fig, axes = subplots(9.0, 3.0, ncols=2)
    idx = list(range(len(activity)))
    if kl is not None:
        se = getattr(information, "marginal_kl_per_dim_se", None)
        axes[0].bar(idx, kl.tolist(), yerr=None if se is None else (2 * se).tolist(),
                    capsize=2)
    else:
        why = ("per-coordinate KL needs\nclosed-form 1-D marginals of q(z|x),\nand this "
               "guide's have none" if getattr(information, "total_correlation", None) is None
               else "the prior does not\nfactorize over coordinates")
        axes[0].text(0.5, 0.5, f"not computed: {why}", ha="center", va="center",
                     transform=axes[0].transAxes, fontsize=9)
        axes[0].set_xticks([])
        axes[0].set_yticks([])
    axes[0].set_title("KL(q(z_i) || p(z_i)) per coordinate", fontsize=9)
    axes[0].set_ylabel("KL (nats)")
    axes[1].bar(idx, activity.tolist(), color=["C2" if a > active else "C7" for a in activity])
    axes[1].axhline(active, color="k", ls="--", lw=1, label=f"active-unit threshold {active}")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("Cov_n(E[z_i|x_n])")
    axes[1].legend(fontsize=MIN_FONT_SIZE)
    axes[1].set_title(f"unit activity Cov_n(E[z_i|x_n]); active > {active}", fontsize=9)
    for ax in axes:
        ax.set_xlabel("latent coordinate")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_evidence_diagnostics(evidence, title: str | None = None,
                              ess_line: float | None = None):
    """Histograms of the per-datapoint effective sample size and Pareto k-hat (with the
    ``KHAT_THRESHOLD`` line above which an importance-sampled log p(x) is not to be trusted).
    The share above the line counts datapoints whose k-hat exceeds it; those whose k-hat could
    not be estimated (NaN) are counted apart. ``ess_line`` draws a dashed reference line on the
    ESS histogram (e.g. the smallest acceptable median ESS); the median ESS is a solid line.

    >>> import torch
    >>> from pyro_lvm.diagnostics import Evidence
    >>> ev = Evidence(torch.zeros(50), torch.rand(50) * 100, torch.rand(50), 100)
    >>> len(plot_evidence_diagnostics(ev).axes)
    2
    """
    from .evidence import KHAT_THRESHOLD

    fig, axes = subplots(9.0, 3.0, ncols=2)
    axes[0].hist(evidence.ess.numpy(), bins=30)
    median = float(evidence.ess.median())
    axes[0].axvline(median, color="k", lw=1, label=f"median {median:.0f}")
    if ess_line is not None:
        axes[0].axvline(ess_line, color="r", ls="--", lw=1, label=f"reference {ess_line:g}")
    axes[0].legend(fontsize=MIN_FONT_SIZE)
    axes[0].set_xlabel(f"effective sample size (of {evidence.num_particles} particles)")
    finite = evidence.khat.isfinite()
    axes[1].hist(evidence.khat[finite].numpy(), bins=30)
    axes[1].axvline(KHAT_THRESHOLD, color="r", ls="--", lw=1, label=f"threshold {KHAT_THRESHOLD}")
    above = float((evidence.khat > KHAT_THRESHOLD).double().mean())  # NaN is not above
    unknown = int((~finite).sum())
    axes[1].set_xlabel(f"Pareto k-hat ({100 * above:.1f}% above {KHAT_THRESHOLD}"
                       + (f"; {unknown} not estimable)" if unknown else ")"))
    axes[1].legend(fontsize=MIN_FONT_SIZE)
    for ax in axes:
        ax.set_ylabel("test datapoints")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def bayes_loop_coordinates(result, max_dims: int = 6) -> list[int]:
    """The coordinates a Bayes' loop figure shows: all when there are at most ``max_dims``,
    else the ``max_dims`` with the smallest rank-test p-value (min of chi-square and KS;
    nan, a coordinate whose draws are not finite, counts as smallest), in index order.

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> r = SimpleNamespace(chi2_p=np.array([.5, .001, .9, .02]), ks_p=np.array([.4, .3, .8, .6]))
    >>> bayes_loop_coordinates(r, 2), bayes_loop_coordinates(r, 6)
    ([1, 3], [0, 1, 2, 3])
    """
    import numpy as np

    p = np.nan_to_num(np.minimum(np.asarray(result.chi2_p), np.asarray(result.ks_p)), nan=-1.0)
    if len(p) <= max_dims:
        return list(range(len(p)))
    return sorted(int(d) for d in np.argsort(p, kind="stable")[:max_dims])


def bayes_loop_caption(result, max_dims: int = 6) -> str:
    """What :func:`plot_bayes_loop` draws, its bands, and which coordinates it shows.

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> r = SimpleNamespace(chi2_p=np.ones(8), ks_p=np.ones(8), num_posterior_samples=99)
    >>> "Showing 4 of 8 coordinates" in bayes_loop_caption(r, 4)
    True
    """
    total = len(result.chi2_p)
    shown = bayes_loop_coordinates(result, max_dims)
    which = (f"Showing {len(shown)} of {total} coordinates (those with the smallest "
             "rank-test p-values)." if len(shown) < total else f"All {total} coordinates.")
    return (f"Top: histogram of the rank of each simulated z among "
            f"{result.num_posterior_samples} draws from q(z|x); grey band: the range that holds "
            "99% of each bin's count when ranks are uniform (binomial). Middle: ECDF of the "
            "normalized ranks minus the uniform CDF; grey band: 99% simultaneous (Kolmogorov) "
            "band. Bottom: the prior r(z) against the average posterior q(z). A calibrated "
            "guide stays inside the bands: ∪ = posterior too narrow, ∩ = too wide, a slope = "
            f"biased. {which}")


def _note(ax, text: str) -> None:
    """A short note in the middle of an axes, on a white box."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "grey"})


def plot_bayes_loop(result, max_dims: int = 6):
    """Three rows for up to ``max_dims`` latent coordinates of a
    :class:`~pyro_lvm.diagnostics.bayes_loop.BayesLoopResult` (those of
    :func:`bayes_loop_coordinates`): SBC rank histograms with the 99% band of a uniform
    histogram, the ECDF of the normalized ranks minus the uniform CDF with a 99% simultaneous
    (Kolmogorov) band, and prior against aggregate-posterior marginals
    (:func:`bayes_loop_caption` says it in words).
    """
    import numpy as np
    from scipy import stats

    ranks, big_l, bins = result.ranks, result.num_posterior_samples, result.rank_bins
    shown = bayes_loop_coordinates(result, max_dims)
    n, dims, total = ranks.shape[0], len(shown), ranks.shape[1]
    fig, axes = subplots(min(MAX_WIDTH, 2.45 * dims + 0.6), 7.6, ncols=dims, nrows=3)
    axes = np.asarray(axes).reshape(3, dims)
    p_bin = 1.0 / bins
    lo, hi = stats.binom.ppf([0.005, 0.995], n, p_bin)
    grid = np.linspace(0, 1, 201)
    band = stats.kstwo.ppf(0.99, n)
    for col, d in enumerate(shown):
        name = result.coordinate_names[d] if result.coordinate_names else f"z[{d}]"
        ax = axes[0, col]
        # a coordinate whose draws are not finite has no p-value and no ranks worth showing
        ranked = not np.isnan(result.chi2_p[d])
        ax.hist(ranks[:, d] if ranked else [], bins=bins, range=(0, big_l + 1), color="C0")
        ax.axhspan(lo, hi, color="grey", alpha=0.3, lw=0, label="99% band if uniform")
        ax.set_title(f"{name} (rank p = {min(result.chi2_p[d], result.ks_p[d]):.1e})",
                     fontsize=9)
        ax.set_xlabel(f"rank among {big_l} draws", fontsize=9)
        ax = axes[1, col]
        u = np.sort((ranks[:, d] + 0.5) / (big_l + 1))
        ecdf = np.searchsorted(u, grid, side="right") / n
        if ranked:
            ax.plot(grid, ecdf - grid, color="C0")
        else:
            for row in (0, 1):
                _note(axes[row, col], "draws not finite:\nno ranks")
        ax.fill_between(grid, -band, band, color="grey", alpha=0.3, lw=0)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("normalized rank", fontsize=9)
        ax = axes[2, col]
        q, r = (v[np.isfinite(v)] for v in (result.posterior_draws[:, d].numpy(),
                                            result.prior_draws[:, d].numpy()))
        both = np.concatenate([q, r])  # histograms of the finite draws only
        edges = np.linspace(both.min(), both.max(), 31) if both.size else np.linspace(0, 1, 31)
        for v, color, label in ((r, "C0", "prior r(z)"), (q, "C1", "average posterior q(z)")):
            ax.hist(v, bins=edges, density=bool(v.size), alpha=0.5, color=color, label=label)
            if not v.size:
                _note(ax, f"no finite draws of {label.split()[-1]}")
        ax.set_xlabel(f"{name} value", fontsize=9)
        for row in range(3):
            axes[row, col].tick_params(labelsize=MIN_FONT_SIZE)
    axes[0, 0].set_ylabel("simulations", fontsize=9)
    axes[1, 0].set_ylabel("ECDF - uniform CDF", fontsize=9)
    axes[2, 0].set_ylabel("density", fontsize=9)
    handles = [*axes[0, 0].get_legend_handles_labels()[0],
               *axes[2, 0].get_legend_handles_labels()[0]]
    labels = [*axes[0, 0].get_legend_handles_labels()[1],
              *axes[2, 0].get_legend_handles_labels()[1]]
    fig.legend(handles, labels, loc="lower center", ncols=3, fontsize=9, frameon=False)
    subset = f"; showing {dims} of {total} coordinates" if dims < total else ""
    verdict = ("NOT JUDGED (draws not finite)" if getattr(result, "flagged", False)
               else "passed" if result.passed else "FAILED")
    fig.suptitle(f"Bayes' loop: {verdict} "
                 f"(combined p = {result.p_value:.1e}{subset})", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_features(features, image_shape, ncols: int = 16, title: str | None = None,
                  shapes=None):
    """A grid of features (one per row of ``features``), each shown as an image on its own
    symmetric gray scale (0 is mid-gray). With ``shapes`` (a
    :class:`~pyro_lvm.diagnostics.features.FeatureShapes` of the same features), features that
    are both localized and oriented get a green frame.

    >>> import torch
    >>> fig = plot_features(torch.randn(20, 16), (4, 4), ncols=10)
    >>> len(fig.axes)
    20
    """
    import numpy as np

    if hasattr(features, "detach"):  # a tensor, possibly on a GPU
        features = features.detach().cpu()
    feats = np.asarray(features, dtype=float)
    num = feats.shape[0]
    ncols = max(1, min(ncols, num))
    nrows = -(-num // ncols)
    fig, axes = subplots(0.6 * ncols, 0.6 * nrows + (0.4 if title else 0.0), ncols=ncols,
                        nrows=nrows)
    axes = np.asarray(axes).reshape(-1)
    verdict = None if shapes is None else (shapes.localized & shapes.oriented).tolist()
    for i, ax in enumerate(axes):
        if i >= num:
            fig.delaxes(ax)
            continue
        limit = float(np.abs(feats[i]).max()) or 1.0
        ax.imshow(feats[i].reshape(image_shape), cmap="gray", vmin=-limit, vmax=limit)
        ax.set_xticks([])
        ax.set_yticks([])
        if verdict is not None and verdict[i]:
            for spine in ax.spines.values():
                spine.set_edgecolor("C2")
                spine.set_linewidth(2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig
