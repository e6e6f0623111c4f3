"""Report sections: the numbers and figures of one recipe's result, added to a
:class:`~pyro_lvm.report.Report` (which holds the page and knows nothing of models).

Each section takes what a recipe in :mod:`pyro_lvm.recipes` returned and draws nothing at
random except from the seed it is given, leaving the global random state as it was.

Each section also says when its numbers should not be trusted, in a warning box next to the
figure that shows it (:meth:`~pyro_lvm.report.Report.add_warning`). The rules are functions
that return the warning's text or None, with their thresholds as the named constants below
(their one home):

- :func:`training_warning`: the training curve is still falling (:func:`still_falling`:
  :data:`CONVERGENCE_TAIL`, :data:`CONVERGENCE_MIN_EPOCHS`, :data:`CONVERGENCE_Z`,
  :data:`CONVERGENCE_MIN_DROP`), or PPCA's SVI fit ends more than
  :data:`PPCA_GAP_TOLERANCE` below its closed form;
- :func:`evidence_warning`: the importance-sampled log p(x) is unreliable
  (:data:`KHAT_SHARE_LIMIT`, :data:`ESS_SHARE_LIMIT`);
- :func:`bayes_loop_warning`: the Bayes' loop fails; how to read the rank histograms.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .datasets import Dataset
from .diagnostics.evidence import KHAT_THRESHOLD
from .diagnostics.information import ACTIVE_UNIT_THRESHOLD
from .diagnostics.plots import (
    bayes_loop_caption,
    plot_aggregate_vs_prior,
    plot_evidence_diagnostics,
    plot_kl_per_dim,
)
from .report import Report, image_grid
from .rng import seeded

__all__ = [
    "CONVERGENCE_MIN_DROP",
    "CONVERGENCE_MIN_EPOCHS",
    "CONVERGENCE_TAIL",
    "CONVERGENCE_Z",
    "ESS_SHARE_LIMIT",
    "KHAT_SHARE_LIMIT",
    "MODEL_SECTIONS",
    "PPCA_GAP_TOLERANCE",
    "bayes_loop_section",
    "bayes_loop_warning",
    "diagnostics_section",
    "evidence_warning",
    "ppca_section",
    "rank_shape",
    "settings_table",
    "still_falling",
    "training_warning",
    "vae_section",
    "versions_section",
]

#: The convergence test looks at the last ``CONVERGENCE_TAIL`` share of the epochs ...
CONVERGENCE_TAIL = 0.1
#: ... but at least this many epochs; a run with fewer epochs is too short to judge.
CONVERGENCE_MIN_EPOCHS = 5
#: The curve is still falling when the least-squares slope over those epochs is negative by
#: more than ``CONVERGENCE_Z`` standard errors (the scatter about the line is the
#: epoch-to-epoch noise) ...
CONVERGENCE_Z = 3.0
#: ... and the line drops by more than this over them (nats per datapoint).
CONVERGENCE_MIN_DROP = 0.05
#: PPCA: SVI's train log p(x) more than this below the closed-form maximum (nats per
#: datapoint) has not converged, since its guide family contains the exact posterior.
PPCA_GAP_TOLERANCE = 0.1
#: Importance-sampled log p(x) is unreliable when more than this share of the datapoints
#: have Pareto k-hat above ``KHAT_THRESHOLD`` (or one that cannot be estimated) ...
KHAT_SHARE_LIMIT = 0.1
#: ... or when the median effective sample size is below this share of the particles.
ESS_SHARE_LIMIT = 0.1

#: The aggregate-posterior figure shows at most this many coordinates' marginals.
AGGREGATE_MAX_DIMS = 6

_TUTORIAL = "tutorials/03_bayes_loop.ipynb"


def _clip01(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clamp(0.0, 1.0)


def still_falling(history) -> dict:
    """The convergence test of a training curve (its train loss per epoch, nats/datapoint).

    Fits a line to the last ``max(CONVERGENCE_MIN_EPOCHS, ceil(CONVERGENCE_TAIL * epochs))``
    epochs. ``falling`` is True when the line drops by more than ``CONVERGENCE_MIN_DROP`` over
    them and its slope is below zero by more than ``CONVERGENCE_Z`` standard errors (from the
    scatter about the line, the epoch-to-epoch noise); None when there are fewer than
    ``CONVERGENCE_MIN_EPOCHS`` epochs (too few to judge). A run stopped early on its
    validation loss counts as converged.

    >>> from pyro_lvm.infer import History
    >>> falling = History(epoch=list(range(1, 21)), train_loss=[100 - e for e in range(20)])
    >>> still_falling(falling)["falling"], still_falling(falling)["drop"]
    (True, 4.0)
    >>> flat = History(epoch=list(range(1, 21)), train_loss=[1 + 0.01 * (-1) ** e
    ...                                                      for e in range(20)])
    >>> still_falling(flat)["falling"]
    False
    """
    losses = np.array([v for v in history.train_loss if math.isfinite(v)], dtype=float)
    epochs = len(losses)
    out = {"epochs": epochs, "tail": 0, "drop": math.nan, "noise": math.nan, "z": math.nan,
           "falling": None}
    if str(history.stop_reason).startswith("early stopping"):
        out["falling"] = False
        return out
    if epochs < CONVERGENCE_MIN_EPOCHS:
        return out
    tail = max(CONVERGENCE_MIN_EPOCHS, math.ceil(CONVERGENCE_TAIL * epochs))
    y = losses[-tail:]
    t = np.arange(tail, dtype=float) - (tail - 1) / 2
    slope = float((t * (y - y.mean())).sum() / (t * t).sum())
    resid = y - y.mean() - slope * t
    noise = float(math.sqrt((resid ** 2).sum() / (tail - 2)))
    se = noise / math.sqrt(float((t * t).sum()))
    drop = -slope * (tail - 1)
    z = math.inf if se == 0 else -slope / se
    if se == 0 and slope >= 0:
        z = 0.0
    out.update(tail=tail, drop=round(drop, 12), noise=noise, z=z,
               falling=bool(drop > CONVERGENCE_MIN_DROP and z > CONVERGENCE_Z))
    return out


def training_warning(history, ppca_gap: float | None = None) -> str | None:
    """The warning for a training run whose numbers are not final, or None: the curve is
    still falling (:func:`still_falling`), has too few epochs to judge, or (PPCA, with
    ``ppca_gap`` = closed-form minus SVI train log p(x)) SVI ends more than
    ``PPCA_GAP_TOLERANCE`` nats/datapoint below its closed form.

    >>> from pyro_lvm.infer import History
    >>> h = History(epoch=list(range(1, 21)), train_loss=[100 - e for e in range(20)])
    >>> print(training_warning(h))  # doctest: +ELLIPSIS
    Training has not converged: over the last 5 of 20 epochs the training loss still fell...
    >>> flat = History(epoch=list(range(1, 21)), train_loss=[1.0] * 20)
    >>> training_warning(flat) is None, training_warning(flat, ppca_gap=17.8) is None
    (True, False)
    """
    test = still_falling(history)
    reasons = []
    if test["falling"] is None:
        reasons.append(f"only {test['epochs']} epoch(s), too few to tell whether the training "
                       f"loss has stopped falling (the test needs {CONVERGENCE_MIN_EPOCHS}).")
    elif test["falling"]:
        reasons.append(
            f"over the last {test['tail']} of {test['epochs']} epochs the training loss still "
            f"fell by {test['drop']:.3f} nats/datapoint ({test['z']:.0f} standard errors of "
            f"the epoch-to-epoch noise; the test flags a drop above {CONVERGENCE_MIN_DROP} "
            f"that is more than {CONVERGENCE_Z:g} standard errors).")
    if ppca_gap is not None and ppca_gap > PPCA_GAP_TOLERANCE:
        reasons.append(
            f"the SVI fit ends {ppca_gap:.3f} nats/datapoint below the closed-form maximum "
            f"likelihood on the training set (tolerance {PPCA_GAP_TOLERANCE}); its guide can "
            "represent the exact posterior, so the gap is unfinished optimization.")
    if not reasons:
        return None
    return ("Training has not converged: " + " Also, ".join(reasons)
            + "\n\nThe numbers and figures below would still change with more training. "
            "Train longer (`pyro-lvm fit --epochs`, e.g. ten times more) or with a larger "
            "learning rate (`--lr`), and check that the curve has flattened.")


def evidence_warning(evidence) -> str | None:
    """The warning for an unreliable importance-sampled log p(x) (an
    :class:`~pyro_lvm.diagnostics.Evidence`), or None: more than ``KHAT_SHARE_LIMIT`` of the
    datapoints flagged (Pareto k-hat above ``KHAT_THRESHOLD`` or not estimable), or a median
    effective sample size below ``ESS_SHARE_LIMIT`` of the particles.

    >>> from pyro_lvm.diagnostics import Evidence
    >>> bad = Evidence(torch.zeros(4), torch.full((4,), 29.0),
    ...                torch.tensor([0.9, 0.8, 0.75, 0.2]), 1000)
    >>> print(evidence_warning(bad))  # doctest: +ELLIPSIS
    The importance-sampled log p(x) is unreliable: 75.0% of the test points have Pareto...
    >>> evidence_warning(Evidence(torch.zeros(4), torch.full((4,), 500.0),
    ...                           torch.full((4,), 0.2), 1000)) is None
    True
    """
    summary = evidence.summary()
    flagged, ess = summary["flagged_fraction"], summary["ess_median"]
    particles = evidence.num_particles
    bad_khat = flagged > KHAT_SHARE_LIMIT
    bad_ess = ess < ESS_SHARE_LIMIT * particles
    if not (bad_khat or bad_ess):
        return None
    return (
        f"The importance-sampled log p(x) is unreliable: {100 * flagged:.1f}% of the test "
        f"points have Pareto k-hat > {KHAT_THRESHOLD} or none that can be estimated (limit "
        f"{100 * KHAT_SHARE_LIMIT:.0f}%), and the median effective sample size is {ess:.0f} of "
        f"{particles} particles (limit {100 * ESS_SHARE_LIMIT:.0f}%). The estimate and its "
        "standard error may be far too high or too low: the guide q(z|x) misses much of the "
        "posterior's mass."
        "\n\nUse more particles (`num_particles` of `latent_diagnostics` / "
        "`log_likelihood`) and, "
        "if k-hat stays high, a better guide (train it longer, or a richer family: full "
        "covariance, a flow), or an importance-weighted objective (IWAE) that fits q for "
        "this purpose.")


def rank_shape(ranks, num_posterior_samples: int) -> str:
    """What one coordinate's SBC rank histogram looks like: "∪" (too many ranks at both ends:
    the posterior is too narrow, overconfident), "∩" (too few: too wide), "slope up" (ranks
    high: the true z lies above most posterior draws, so q is biased low), "slope down"
    (biased high) or "flat", whichever departs most from uniform, in standard errors (> 3).

    >>> rng = np.random.default_rng(0)
    >>> rank_shape(rng.integers(0, 100, 2000), 99)
    'flat'
    >>> rank_shape(np.concatenate([np.zeros(500), np.full(500, 99)]), 99)
    '∪'
    >>> rank_shape(np.full(1000, 50), 99), rank_shape(rng.integers(60, 100, 1000), 99)
    ('∩', 'slope up')
    """
    u = (np.asarray(ranks, dtype=float) + 0.5) / (num_posterior_samples + 1)
    n = len(u)
    z_outer = (np.mean(np.abs(u - 0.5) > 0.25) - 0.5) / math.sqrt(0.25 / n)
    z_shift = (u.mean() - 0.5) / math.sqrt(1 / (12 * n))
    if max(abs(z_outer), abs(z_shift)) <= 3:
        return "flat"
    if abs(z_shift) > abs(z_outer):
        return "slope up" if z_shift > 0 else "slope down"
    return "∪" if z_outer > 0 else "∩"


_SHAPE_MEANING = {
    "∪": "a ∪ shape: the true z falls too often outside the bulk of q(z|x): the posterior is "
         "too narrow (overconfident)",
    "∩": "a ∩ shape: the true z falls too often in the middle of q(z|x): the posterior is too "
         "wide",
    "slope up": "a slope rising to the right: the true z lies above most draws of q(z|x): "
                "the posterior is biased low",
    "slope down": "a slope falling to the right: the true z lies below most draws of q(z|x): "
                  "the posterior is biased high",
    "flat": "no single clear shape (look at the ECDF row)",
}


def bayes_loop_warning(label: str, result) -> str | None:
    """The warning for a failing Bayes' loop (a
    :class:`~pyro_lvm.diagnostics.bayes_loop.BayesLoopResult`), or None when it passed: how
    to read the rank shapes, what this one's worst coordinate shows, and what to try next.

    >>> from types import SimpleNamespace
    >>> r = SimpleNamespace(passed=False, p_value=1e-44, num_posterior_samples=99,
    ...                     ranks=np.concatenate([np.zeros((500, 1)), np.full((500, 1), 99)]),
    ...                     chi2_p=np.array([1e-50]), ks_p=np.array([1e-40]),
    ...                     coordinate_names=["z[0]"])
    >>> print(bayes_loop_warning("VAE", r))  # doctest: +ELLIPSIS
    VAE fails the Bayes' loop (combined p = 1.0e-44)...z[0] shows a ∪ shape...
    >>> bayes_loop_warning("VAE", SimpleNamespace(passed=True)) is None
    True
    """
    if result.passed:
        return None
    if getattr(result, "flagged", False):
        return f"{label}: " + result.summary()
    worst = int(np.argmin(np.minimum(result.chi2_p, result.ks_p)))
    name = (result.coordinate_names[worst] if result.coordinate_names else f"z[{worst}]")
    shape = rank_shape(result.ranks[:, worst], result.num_posterior_samples)
    return (
        f"{label} fails the Bayes' loop (combined p = {result.p_value:.1e}): its posteriors "
        "do not average back to the prior, so its q(z|x) (and every number computed from it "
        f"here) is not the model's posterior. Its least uniform coordinate {name} shows "
        f"{_SHAPE_MEANING[shape]}."
        "\n\nHow to read the rank histograms: flat = calibrated; ∪ = posterior too narrow "
        "(overconfident); ∩ = posterior too wide; a slope = posterior biased (rising to the "
        f"right: too low; falling: too high). `{_TUTORIAL}` explains them with examples."
        "\n\nNext step: train longer (the guide may be unfinished), then try a richer guide "
        "(a full-covariance Normal, `pyro_lvm.guides.AmortizedMultivariateNormal`, or a "
        "normalizing flow, `AmortizedFlow`), and measure "
        "where the bound's gap comes from with `pyro_lvm.diagnostics.inference_gaps` (the "
        "family, or the encoder); if a richer guide still fails, look for a bug in the model "
        "or guide (a wrong scale, a forgotten offset).")


def versions_section(report: Report, versions: dict) -> None:
    """Add the "Versions" section: one row per package.

    >>> r = Report("t"); versions_section(r, {"torch": "2.13"}); "<td>torch</td>" in r.render()
    True
    """
    report.add_heading("Versions")
    report.add_table(versions, headers=("package", "version"))


def ppca_section(report: Report, result: dict, ds: Dataset, num_images: int = 10) -> None:
    """Add the PPCA section (numbers, training curve, reconstructions) to ``report``.

    >>> from pyro_lvm import datasets
    >>> from pyro_lvm.recipes import fit_ppca
    >>> ds = datasets.digits()
    >>> rep = Report("t")
    >>> ppca_section(rep, fit_ppca(ds, 2, epochs=1, batch_size=512, progress=False), ds)
    >>> "PPCA" in rep.render()
    True
    """
    m = result["metrics"]
    cf, sv, sk = m["closed_form"], m["svi"], m["sklearn"]
    report.add_heading(f"Probabilistic PCA (latent_dim = {m['latent_dim']})")
    report.add_paragraph(
        "x = mu + W z + noise, z ~ N(0, I), noise ~ N(0, sigma^2 I) (Tipping & Bishop 1999). "
        "The closed-form maximum-likelihood fit is compared with SVI from a random start "
        "(amortized linear-Gaussian guide, whose family contains the exact posterior) and "
        "with scikit-learn's PCA(n_components=d).score. Exact log p(x) per datapoint, nats."
    )
    report.add_table(
        [
            ("closed-form ML", cf["train_log_lik"], cf["test_log_lik"], cf["noise_variance"]),
            ("SVI (random start)", sv["train_log_lik"], sv["test_log_lik"],
             sv["noise_variance"]),
            ("sklearn PCA.score", sk["train_log_lik"], sk["test_log_lik"],
             sk["noise_variance"]),
        ],
        headers=("fit", "train log p(x)", "test log p(x)", "sigma^2"),
    )
    report.add_table({
        "gap closed form - SVI, train (nats/datapoint)": m["gap_train"],
        "gap closed form - SVI, test (nats/datapoint)": m["gap_test"],
        "gap closed form - sklearn, test (nats/datapoint)": m["sklearn_gap_test"],
        "SVI test ELBO (nats/datapoint)": sv["test_elbo"],
        "SVI epochs / steps": f"{sv['epochs']} / {sv['num_steps']}",
        "SVI batch size, Adam lr": "{}, {:g}{}".format(
            sv["batch_size"] or "full batch", sv["lr"],
            f" decaying to {sv['final_lr']:g}" if sv["final_lr"] else ""),
        "SVI fit time (s)": sv["fit_time_s"],
    })
    fig = result["history"].plot(
        reference={"closed-form -log p(x), train": -cf["train_log_lik"],
                   "closed-form -log p(x), validation": -cf["val_log_lik"]},
        title="PPCA by SVI: negative ELBO per datapoint",
    )
    warning = training_warning(result["history"], ppca_gap=m["gap_train"])
    if warning:
        report.add_warning(warning)
    report.add_figure(fig, caption="SVI training curve (the y-axis leaves out the highest 10% "
                                   "of the losses, the first epochs); dashed lines: the exact "
                                   "-log p(x) of the closed-form maximum-likelihood solution, "
                                   "which a converged SVI fit reaches.")
    if ds.image_shape is None:
        report.add_paragraph("No reconstruction images: these data have no image shape.",
                             note=True)
        return
    x = ds.test[:num_images].double()
    grid = image_grid(
        [x, _clip01(result["closed_form"].reconstruct(x)), _clip01(result["svi"].reconstruct(x))],
        ds.image_shape, row_labels=["test data", "closed form", "SVI"],
        title="PPCA reconstructions mu + W E[z|x]",
    )
    report.add_figure(grid, caption="Test images and their PPCA reconstructions.")


def vae_section(report: Report, result: dict, ds: Dataset, num_images: int = 10,
                num_samples: int = 30, seed: int | None = None) -> None:
    """Add the VAE section (numbers, curves, reconstructions, prior samples) to ``report``.

    The prior samples are drawn with ``seed`` (default: the seed the recipe was fitted with),
    and the global random state is left as it was. Example (tests/test_cli.py runs it in the
    demo's report, and checks the random state)::

        ds = datasets.digits(binarize="static")
        vae_section(report, fit_vae(ds, 2, (8,), epochs=1, progress=False), ds)
    """
    m = result["metrics"]
    vae = result["fitted"]
    report.add_heading(f"VAE (latent_dim = {m['latent_dim']}, hidden = {tuple(m['hidden'])})")
    report.add_paragraph(
        "Bernoulli decoder, diagonal-Normal encoder (Kingma & Welling 2014), trained on "
        f"{ds.name} with Trace_ELBO and Adam. ELBO and log-likelihoods are per datapoint, in "
        "nats; the baseline is independent Bernoulli pixels fitted to the training set."
    )
    report.add_table({
        "test ELBO": m["test_elbo"],
        "best validation ELBO": m["best_val_elbo"],
        "final train ELBO (epoch mean)": m["final_train_elbo"],
        "independent-pixel baseline, test log p(x)": m["baseline_test_log_lik"],
        "epochs / steps": f"{m['epochs']} / {m['num_steps']}",
        "batch size, lr": f"{m['batch_size']}, {m['lr']:g}",
        "stop reason": m["stop_reason"],
        "fit time (s)": m["fit_time_s"],
    })
    warning = training_warning(result["history"])
    if warning:
        report.add_warning(warning)
    report.add_figure(result["history"].plot(title="VAE: negative ELBO per datapoint"),
                      caption="Training (epoch mean of minibatch estimates) and validation "
                              "negative ELBO; the dot marks the best validation epoch. The "
                              "y-axis leaves out the highest 10% of the losses.")
    if ds.image_shape is None:
        report.add_paragraph("No reconstruction or sample images: these data have no image "
                             "shape.", note=True)
        return
    x = ds.test[:num_images]
    report.add_figure(
        image_grid([x, vae.reconstruct(x)], ds.image_shape,
                   row_labels=["test data", "reconstruction"],
                   title="VAE reconstructions: p(x | z = E_q[z|x])"),
        caption="Binarized test images and the decoder's pixel probabilities at the "
                "posterior mean.")
    with seeded(m.get("seed", 0) if seed is None else seed):
        samples = vae.sample(num_samples, mean=True)
    report.add_figure(
        image_grid(samples, ds.image_shape, title="VAE samples: pixel probabilities of p(x|z), "
                                                  "z ~ p(z)"),
        caption="Decoded draws from the prior.")


def diagnostics_section(report: Report, diag: dict, name: str) -> None:
    """Add the latent diagnostics of a fitted model to ``report``: the information terms with
    q(z) against p(z) (when ``diag`` has "information") and the importance-sampled evidence
    (when it has "evidence"), as :func:`~pyro_lvm.recipes.latent_diagnostics` returns them.
    Example (tests/test_cli.py runs it in the demo's report)::

        diag = latent_diagnostics(vae.model, vae.guide, ds.train, ds.test, num_particles=1000)
        diagnostics_section(report, diag, "VAE")
    """
    report.add_heading(f"{name}: latent diagnostics", level=3)
    if "information" in diag:
        _information_part(report, diag)
    if "evidence" in diag:
        _evidence_part(report, diag)


def _information_part(report: Report, diag: dict) -> None:
    m, info = diag["metrics"], diag["information"]
    if info.flagged:
        report.add_warning(info.warning(), title="Numbers that are not finite")
    report.add_paragraph(
        "Rate R = mean KL(q(z|x) || p(z)) and distortion D = -E_q log p(x|z) (-ELBO = R + D); "
        "ELBO surgery splits R into the mutual information I_q(n; z) (at most log N) and "
        "KL(q(z) || p(z)), the gap between the aggregate posterior q(z) and the prior — "
        "fitting the data does not make them equal. Training set; per datapoint, nats.")
    fmt = "{:.4f} ± {:.4f}"
    report.add_table({
        "rate": fmt.format(info.rate.value, info.rate.se),
        "distortion": fmt.format(info.distortion.value, info.distortion.se),
        "mutual information I_q(n; z)": fmt.format(info.mutual_information.value,
                                                     info.mutual_information.se),
        "ceiling log N": m["mutual_information_ceiling"],
        "marginal KL(q(z) || p(z))": fmt.format(info.marginal_kl.value, info.marginal_kl.se),
        "total correlation of q(z)": ("n/a (needs closed-form 1-D marginals of q(z|x))"
                                      if info.total_correlation is None
                                      else fmt.format(info.total_correlation.value,
                                                      info.total_correlation.se)),
        f"active units (Cov_x E[z_i|x] > {ACTIVE_UNIT_THRESHOLD})":
            f"{m['active_units']} of {len(info.unit_activity)}",
    })
    q_draws = diag["posterior_draws"]
    dims, shown = q_draws.shape[1], min(q_draws.shape[1], AGGREGATE_MAX_DIMS)
    report.add_figure(
        plot_aggregate_vs_prior(q_draws, diag["prior_draws"], max_dims=AGGREGATE_MAX_DIMS),
        caption="The aggregate posterior q(z) = mean_n q(z|x_n) against the prior p(z): "
                "histograms of the 1-D marginals (" + (
                    f"showing the first {shown} of {dims} coordinates" if shown < dims
                    else f"all {dims} coordinates") + "), and both sets of draws projected on "
                "q's two principal axes. Where fitting left them apart, q(z) differs from "
                "p(z).")
    report.add_figure(plot_kl_per_dim(info),
                      caption="Left: per-coordinate KL(q(z_i) || p(z_i)), error bars +- 2 "
                              "standard errors. Right: unit activity Cov_n E[z_i|x_n] (log "
                              f"scale); dashed line: the active-unit threshold "
                              f"{ACTIVE_UNIT_THRESHOLD}, active units in green.")


def _evidence_part(report: Report, diag: dict) -> None:
    m, ev = diag["metrics"], diag["evidence"]
    report.add_paragraph(
        f"log p(x) on the test set by importance sampling with the guide as proposal "
        f"({m['num_particles']} particles per datapoint; Burda et al. 2016), with its "
        "reliability: the effective sample size and Pareto k-hat of the weights (Vehtari et "
        "al. 2015).")
    report.add_table({
        f"test log p(x), {m['num_particles']} importance samples":
            "{:.4f} ± {:.4f}".format(m["test_log_px"], m["test_log_px_se"]),
        f"median ESS of {m['num_particles']} / share flagged (k-hat > {KHAT_THRESHOLD} "
        "or not estimable)":
            f"{m['ess_median']:.0f} / {100 * m['khat_flagged_fraction']:.1f}%",
    })
    warning = evidence_warning(ev)
    if warning:
        report.add_warning(warning)
    report.add_figure(plot_evidence_diagnostics(ev, ess_line=ESS_SHARE_LIMIT * ev.num_particles),
                      caption="Reliability of the importance-sampled log p(x) on the test "
                              "set, per datapoint. Left: effective sample size; dashed line: "
                              f"{100 * ESS_SHARE_LIMIT:.0f}% of the particles, below which the "
                              "median should not fall. Right: Pareto k-hat; dashed line: "
                              f"{KHAT_THRESHOLD}, above which a point's estimate is unreliable "
                              f"(at most {100 * KHAT_SHARE_LIMIT:.0f}% of the points should be).")


def bayes_loop_section(report: Report, results: dict, max_dims: int = 4) -> dict:
    """Add the Bayes' loop results (one row per fitted model) to ``report``, with the rank
    histograms of the first that fails (or of the last; its ``max_dims`` least uniform
    coordinates), and a warning for each that fails. Returns their metrics.

    >>> from pyro_lvm.diagnostics import bayes_loop
    >>> from pyro_lvm.models import PPCA
    >>> ppca = PPCA(4, 2)
    >>> rep = Report("t")
    >>> m = bayes_loop_section(rep, {"PPCA": bayes_loop(ppca.model, ppca.exact_posterior,
    ...                                                 torch.zeros(200, 4))})
    >>> m["PPCA"]["passed"]
    True
    """
    report.add_heading("Bayes' loop: do the posteriors average back to the prior?", level=3)
    report.add_paragraph(
        "z ~ r(z), x ~ p(x|z), then q(z|x) with the model's own guide: if inference is right, "
        "the rank of each z among 99 draws from q(z|x) is uniform (simulation-based "
        "calibration) and the average posterior equals the prior (energy-distance test). "
        "A failure is a bug, an under-trained guide, or a family that cannot represent the "
        "posterior.")
    rows, metrics = [], {}
    for label, r in results.items():
        verdict = "not finite" if r.flagged else "passed" if r.passed else "FAILED"
        rows.append((label, verdict, r.p_value, r.two_sample.p_value, r.worst()))
        metrics[label] = {"passed": bool(r.passed), "p_value": r.p_value,
                          "energy_p_value": r.two_sample.p_value,
                          "variance_ratio": r.variance_ratio.tolist(),
                          "effect_mean": r.effect_mean.tolist(), "nonfinite": r.nonfinite}
    report.add_table(rows, headers=("model", "result", "combined p", "q(z) vs r(z) p",
                                    "largest difference"),
                     kinds=("auto", "auto", "p", "p", "auto"))
    shown = next((r for r in results.values() if not r.passed), list(results.values())[-1])
    label = next(k for k, v in results.items() if v is shown)
    for name, r in results.items():
        warning = bayes_loop_warning(name, r)  # a failure, or draws that are not finite
        if warning:
            report.add_warning(warning, title=("Bayes' loop not judged: numbers not finite"
                                               if r.flagged else
                                               "Bayes' loop failed: the posteriors are wrong"))
    report.add_figure(shown.plot(max_dims=max_dims),
                      caption=f"{label}: " + bayes_loop_caption(shown, max_dims) + " "
                              + shown.summary())
    return metrics


def settings_table(report: Report, info: dict) -> None:
    """Add the "Run" section: one row per setting (a name ending in "(s)" is in seconds).

    >>> r = Report("t"); settings_table(r, {"time (s)": 12.345}); ">12.3<" in r.render()
    True
    """
    report.add_heading("Run", level=2)
    report.add_table(info, headers=("setting", "value"))


#: The section of each built-in model (:data:`pyro_lvm.recipes.BUILTIN_MODELS`).
MODEL_SECTIONS = {"ppca": ppca_section, "vae": vae_section}
