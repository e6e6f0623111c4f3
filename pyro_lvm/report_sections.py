"""Report sections: the numbers and figures of one recipe's result, added to a
:class:`~pyro_lvm.report.Report` (which holds the page and knows nothing of models).

Each section takes what a recipe in :mod:`pyro_lvm.recipes` returned and draws nothing at
random except from the seed it is given, leaving the global random state as it was.
"""

from __future__ import annotations

import torch

from .datasets import Dataset
from .diagnostics.evidence import KHAT_THRESHOLD
from .diagnostics.information import ACTIVE_UNIT_THRESHOLD
from .diagnostics.plots import (
    plot_aggregate_vs_prior,
    plot_evidence_diagnostics,
    plot_kl_per_dim,
)
from .report import Report, image_grid
from .rng import seeded

__all__ = [
    "MODEL_SECTIONS",
    "bayes_loop_section",
    "diagnostics_section",
    "ppca_section",
    "settings_table",
    "vae_section",
]


def _clip01(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clamp(0.0, 1.0)


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
        "SVI batch size, Adam lr": "{}, {:g} -> {:g}".format(
            sv["batch_size"] or "full batch", sv["lr"], sv["final_lr"] or sv["lr"]),
        "SVI fit time (s)": sv["fit_time_s"],
    })
    fig = result["history"].plot(
        reference={"closed-form -log p(x), train": -cf["train_log_lik"],
                   "closed-form -log p(x), validation": -cf["val_log_lik"]},
        title="PPCA by SVI: negative ELBO per datapoint",
    )
    report.add_figure(fig, caption="SVI training curve; dashed lines: the exact -log p(x) "
                                   "of the closed-form maximum-likelihood solution.")
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
    and the global random state is left as it was. (tests/test_cli.py runs it end to end.)

    >>> from pyro_lvm import datasets
    >>> from pyro_lvm.recipes import fit_vae
    >>> ds = datasets.digits(binarize="static")
    >>> rep = Report("t")
    >>> vae_section(rep, fit_vae(ds, 2, (8,), epochs=1, progress=False), ds)  # doctest: +SKIP
    >>> "VAE" in rep.render()  # doctest: +SKIP
    True
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
    report.add_figure(result["history"].plot(title="VAE: negative ELBO per datapoint"),
                      caption="Training (epoch mean of minibatch estimates) and validation "
                              "negative ELBO.")
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
    """Add the latent diagnostics of a fitted model (information, q(z) against p(z),
    importance-sampled evidence) to ``report``. (tests/test_cli.py runs it end to end.)

    >>> from pyro_lvm import datasets
    >>> from pyro_lvm.models import VAE
    >>> from pyro_lvm.recipes import latent_diagnostics
    >>> vae = VAE(64, 2, hidden=(8,))
    >>> ds = datasets.digits(binarize="static")
    >>> rep = Report("t")
    >>> diagnostics_section(rep, latent_diagnostics(vae.model, vae.guide,  # doctest: +SKIP
    ...                                             ds.train[:100],
    ...                                             ds.test[:10], 50), "VAE")
    >>> "aggregate posterior" in rep.render()  # doctest: +SKIP
    True
    """
    m = diag["metrics"]
    report.add_heading(f"{name}: latent diagnostics", level=3)
    report.add_paragraph(
        "Rate R = mean KL(q(z|x) || p(z)) and distortion D = -E_q log p(x|z) (-ELBO = R + D); "
        "ELBO surgery splits R into the mutual information I_q(n; z) (at most log N) and "
        "KL(q(z) || p(z)), the gap between the aggregate posterior q(z) and the prior — "
        "fitting the data does not make them equal. Training set; per datapoint, nats.")
    fmt = "{:.4f} ± {:.4f}"
    info = diag["information"]
    report.add_table({
        "rate": fmt.format(info.rate.value, info.rate.se),
        "distortion": fmt.format(info.distortion.value, info.distortion.se),
        "mutual information I_q(n; z)": fmt.format(info.mutual_information.value,
                                                     info.mutual_information.se),
        "ceiling log N": m["mutual_information_ceiling"],
        "marginal KL(q(z) || p(z))": fmt.format(info.marginal_kl.value, info.marginal_kl.se),
        "total correlation of q(z)": ("n/a (needs diagonal-Normal posteriors)"
                                      if info.total_correlation is None
                                      else fmt.format(info.total_correlation.value,
                                                      info.total_correlation.se)),
        f"active units (Cov_x E[z_i|x] > {ACTIVE_UNIT_THRESHOLD})":
            f"{m['active_units']} of {len(info.unit_activity)}",
        f"test log p(x), {m['num_particles']} importance samples":
            fmt.format(m["test_log_px"], m["test_log_px_se"]),
        f"median ESS / share flagged (k-hat > {KHAT_THRESHOLD} or not estimable)":
            f"{m['ess_median']:.0f} / {100 * m['khat_flagged_fraction']:.1f}%",
    })
    report.add_figure(plot_aggregate_vs_prior(diag["posterior_draws"], diag["prior_draws"]),
                      caption="The aggregate posterior q(z) = mean_n q(z|x_n) against the "
                              "prior p(z): 1-D marginals and q's two principal axes.")
    report.add_figure(plot_kl_per_dim(info),
                      caption="Per-coordinate KL(q(z_i) || p(z_i)) and unit activity.")
    report.add_figure(plot_evidence_diagnostics(diag["evidence"]),
                      caption="Reliability of the importance-sampled log p(x) on the test "
                              "set: effective sample size and Pareto k-hat per datapoint.")


def bayes_loop_section(report: Report, results: dict) -> dict:
    """Add the Bayes' loop results (one row per fitted model) to ``report``, with the rank
    histograms of the first that fails (or of the last). Returns their metrics.

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
        rows.append((label, "passed" if r.passed else "FAILED", r.p_value,
                     r.two_sample.p_value, r.worst()))
        metrics[label] = {"passed": bool(r.passed), "p_value": r.p_value,
                          "energy_p_value": r.two_sample.p_value,
                          "variance_ratio": r.variance_ratio.tolist(),
                          "effect_mean": r.effect_mean.tolist()}
    report.add_table(rows, headers=("model", "result", "combined p", "q(z) vs r(z) p",
                                    "largest difference"))
    shown = next((r for r in results.values() if not r.passed), list(results.values())[-1])
    label = next(k for k, v in results.items() if v is shown)
    report.add_figure(shown.plot(max_dims=4), caption=f"{label}: " + shown.summary())
    return metrics


def settings_table(report: Report, info: dict) -> None:
    report.add_heading("Run", level=2)
    report.add_table(info, headers=("setting", "value"))


#: The section of each built-in model (:data:`pyro_lvm.recipes.BUILTIN_MODELS`).
MODEL_SECTIONS = {"ppca": ppca_section, "vae": vae_section}
