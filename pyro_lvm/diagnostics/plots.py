"""Figures of the diagnostics, kept apart from the numbers (matplotlib, no pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping

from ..figures import subplots


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
    ``max_dims`` coordinates, and a 2-D projection onto q's two leading principal axes.

    >>> import torch
    >>> fig = plot_aggregate_vs_prior(torch.randn(500, 3), torch.randn(500, 3))
    >>> len(fig.axes)
    4
    """
    import torch

    q, p = torch.as_tensor(posterior_draws).double(), torch.as_tensor(prior_draws).double()
    dims = min(q.shape[1], max_dims)
    fig, axes = subplots(2.3 * (dims + 1), 2.6, ncols=dims + 1)
    for i in range(dims):
        ax = axes[i]
        lo = float(torch.quantile(torch.cat([q[:, i], p[:, i]]), 0.005))
        hi = float(torch.quantile(torch.cat([q[:, i], p[:, i]]), 0.995))
        ax.hist(p[:, i].numpy(), bins=40, range=(lo, hi), density=True, alpha=0.5,
                label="prior p(z)")
        ax.hist(q[:, i].numpy(), bins=40, range=(lo, hi), density=True, alpha=0.5,
                label="aggregate q(z)")
        ax.set_title(f"z[{i}]", fontsize=9)
        ax.set_yticks([])
    axes[0].legend(fontsize=7)
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
    ax.scatter(proj_p[:, 0], proj_p[:, 1], s=2, alpha=0.3, label="prior")
    ax.scatter(proj_q[:, 0], proj_q[:, 1], s=2, alpha=0.3, label="aggregate")
    ax.set_title("principal axes of q(z)", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_kl_per_dim(information, title: str | None = None):
    """Bars of KL(q(z_i) || p(z_i)) per latent coordinate (+- 2 standard errors), and each
    unit's activity Cov_n(E_q[z_i | x_n]) (Burda et al.'s active units: above
    ``ACTIVE_UNIT_THRESHOLD``).

    >>> import torch
    >>> from types import SimpleNamespace
    >>> info = SimpleNamespace(marginal_kl_per_dim=torch.tensor([0.1, 0.02]),
    ...                        unit_activity=torch.tensor([1.0, 0.001]))
    >>> len(plot_kl_per_dim(info).axes)
    2
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
        axes[0].set_title("KL(q(z_i) || p(z_i)) per coordinate (nats)", fontsize=9)
    else:
        axes[0].text(0.5, 0.5, "prior does not factorize\nover coordinates",
                     ha="center", va="center", transform=axes[0].transAxes)
    axes[1].bar(idx, activity.tolist(), color=["C2" if a > active else "C7" for a in activity])
    axes[1].axhline(active, color="k", ls="--", lw=1)
    axes[1].set_yscale("log")
    axes[1].set_title(f"unit activity Cov_n(E[z_i|x_n]); active > {active}", fontsize=9)
    for ax in axes:
        ax.set_xlabel("latent coordinate")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_evidence_diagnostics(evidence, title: str | None = None):
    """Histograms of the per-datapoint effective sample size and Pareto k-hat (with the
    ``KHAT_THRESHOLD`` line above which an importance-sampled log p(x) is not to be trusted).
    The share above the line counts datapoints whose k-hat exceeds it; those whose k-hat could
    not be estimated (NaN) are counted apart.

    >>> import torch
    >>> from pyro_lvm.diagnostics import Evidence
    >>> ev = Evidence(torch.zeros(50), torch.rand(50) * 100, torch.rand(50), 100)
    >>> len(plot_evidence_diagnostics(ev).axes)
    2
    """
    from .evidence import KHAT_THRESHOLD

    fig, axes = subplots(9.0, 3.0, ncols=2)
    axes[0].hist(evidence.ess.numpy(), bins=30)
    axes[0].set_xlabel(f"effective sample size (of {evidence.num_particles})")
    finite = evidence.khat.isfinite()
    axes[1].hist(evidence.khat[finite].numpy(), bins=30)
    axes[1].axvline(KHAT_THRESHOLD, color="r", ls="--", lw=1, label=f"{KHAT_THRESHOLD}")
    above = float((evidence.khat > KHAT_THRESHOLD).double().mean())  # NaN is not above
    unknown = int((~finite).sum())
    axes[1].set_xlabel(f"Pareto k-hat ({100 * above:.1f}% above {KHAT_THRESHOLD}"
                       + (f"; {unknown} not estimable)" if unknown else ")"))
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_ylabel("datapoints")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_bayes_loop(result, max_dims: int = 6):
    """Three rows for up to ``max_dims`` latent coordinates of a
    :class:`~pyro_lvm.diagnostics.bayes_loop.BayesLoopResult`: SBC rank histograms with the
    99% band of a uniform histogram, the ECDF of the normalized ranks minus the uniform CDF
    with a 99% simultaneous (Kolmogorov) band, and prior against aggregate-posterior
    marginals.
    """
    import numpy as np
    from scipy import stats

    ranks, big_l, bins = result.ranks, result.num_posterior_samples, result.rank_bins
    n, dims = ranks.shape[0], min(ranks.shape[1], max_dims)
    fig, axes = subplots(2.6 * dims, 7.0, ncols=dims, nrows=3)
    p_bin = 1.0 / bins
    lo, hi = stats.binom.ppf([0.005, 0.995], n, p_bin)
    grid = np.linspace(0, 1, 201)
    band = stats.kstwo.ppf(0.99, n)
    for d in range(dims):
        name = result.coordinate_names[d] if result.coordinate_names else f"z[{d}]"
        ax = axes[0, d]
        ax.hist(ranks[:, d], bins=bins, range=(0, big_l + 1), color="C0")
        ax.axhspan(lo, hi, color="grey", alpha=0.3, lw=0)
        ax.set_title(f"{name}: ranks", fontsize=9)
        ax = axes[1, d]
        u = np.sort((ranks[:, d] + 0.5) / (big_l + 1))
        ecdf = np.searchsorted(u, grid, side="right") / n
        ax.plot(grid, ecdf - grid, color="C0")
        ax.fill_between(grid, -band, band, color="grey", alpha=0.3, lw=0)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title("ECDF - uniform", fontsize=9)
        ax = axes[2, d]
        q, r = result.posterior_draws[:, d].numpy(), result.prior_draws[:, d].numpy()
        edges = np.linspace(min(q.min(), r.min()), max(q.max(), r.max()), 31)
        ax.hist(r, bins=edges, density=True, alpha=0.5, label="prior r(z)")
        ax.hist(q, bins=edges, density=True, alpha=0.5, label="average posterior q(z)")
        ax.set_yticks([])
    axes[2, 0].legend(fontsize=7)
    fig.suptitle(f"Bayes' loop: {'passed' if result.passed else 'FAILED'} "
                 f"(p = {result.p_value:.3g})")
    fig.tight_layout()
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
