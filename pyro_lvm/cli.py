"""The ``pyro-lvm`` command: fit a built-in model, or run the demo, and write an HTML report.

    pyro-lvm fit --model ppca --data digits --epochs 50 --out runs/ppca
    pyro-lvm fit --model vae --data digits --epochs 100 --hidden 128 --out runs/vae
    pyro-lvm demo --out demo-output [--fast]

``fit`` writes ``history.json``, ``metrics.json``, ``checkpoint.pt`` and ``report.html`` to the
output directory; ``demo`` trains a PPCA (checked against its closed-form maximum-likelihood
solution and scikit-learn) and a small VAE on the 8x8 digits and writes ``report.html`` and
``metrics.json``. Invalid arguments end with a one-line message naming the argument and exit
status 2. The numbers are computed by the ``run_*``/``fit_*`` functions; the report is built
from their results afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyro
import pyro.optim
import torch

from . import datasets
from .datasets import Dataset
from .diagnostics import (
    AggregatePosterior,
    bayes_loop,
    information,
    log_likelihood,
    sample_prior,
)
from .diagnostics.plots import (
    plot_aggregate_vs_prior,
    plot_evidence_diagnostics,
    plot_kl_per_dim,
)
from .infer import TrainingDivergedError, evaluate_loss, fit
from .models import PPCA, VAE
from .report import Report, image_grid

__all__ = [
    "DEMO_SETTINGS",
    "build_parser",
    "fit_ppca",
    "fit_vae",
    "main",
    "run_demo",
    "run_fit",
    "write_json",
]

MODELS = ("ppca", "vae")
PROG = "pyro-lvm"

# Settings of `pyro-lvm demo` (and of `--fast`, for tests). PPCA: full-batch SVI with a
# decaying learning rate, so the random start ends within a few hundredths of a nat of the
# closed-form maximum likelihood. VAE: small MLPs on the statically binarized digits.
DEMO_SETTINGS = {
    "full": {
        "ppca": {"latent_dim": 8, "epochs": 800, "batch_size": None, "lr": 0.1,
                 "final_lr": 1e-3},
        "vae": {"latent_dim": 8, "hidden": (128,), "epochs": 200, "batch_size": 128,
                "lr": 3e-3},
        "diagnostics": {"num_particles": 5000},
    },
    "fast": {
        "ppca": {"latent_dim": 8, "epochs": 40, "batch_size": None, "lr": 0.1,
                 "final_lr": 1e-3},
        "vae": {"latent_dim": 8, "hidden": (64,), "epochs": 4, "batch_size": 128,
                "lr": 3e-3},
        "diagnostics": {"num_particles": 200},
    },
}


# -- numbers ------------------------------------------------------------------------------------
def _mean(t: torch.Tensor) -> float:
    return float(t.detach().double().mean())


def _decaying_adam(lr: float, final_lr: float | None, num_steps: int):
    """Adam whose learning rate decays geometrically from ``lr`` to ``final_lr`` over
    ``num_steps`` steps (ClippedAdam's per-step ``lrd``), with clipping switched off."""
    if final_lr is None or final_lr >= lr:
        return pyro.optim.Adam({"lr": lr})
    lrd = (final_lr / lr) ** (1.0 / max(num_steps, 1))
    return pyro.optim.ClippedAdam({"lr": lr, "lrd": lrd, "clip_norm": 1e12})


def fit_ppca(ds: Dataset, latent_dim: int = 8, epochs: int = 200, batch_size: int | None = 128,
             lr: float = 1e-2, final_lr: float | None = None, seed: int = 0,
             checkpoint=None, resume: bool = False, progress: bool = True) -> dict:
    """Fit PPCA to ``ds`` by SVI from a random start, and by its closed form; compare both.

    The SVI fit maximizes the ELBO with the linear-Gaussian amortized guide, whose family
    contains the exact posterior, so at convergence its log p(x) reaches the maximum
    likelihood of the closed-form solution (Tipping & Bishop 1999). scikit-learn's
    ``PCA(n_components=d).score`` is an independent implementation of the same PPCA
    log-likelihood (with a 1/(N-1) covariance, hence slightly below the maximum on train).
    The SVI model keeps its last epoch's parameters (``restore_best=False``): the comparison
    is with the maximum of the *training* likelihood, not the best validation epoch. With
    ``final_lr`` the Adam learning rate decays geometrically from ``lr`` to ``final_lr``;
    ``batch_size=None`` is full-batch.
    Everything runs in float64. Returns ``{"metrics": ..., "history": ..., "svi": PPCA,
    "closed_form": PPCA}``; all log-likelihoods are per datapoint, in nats.

    Example:
        >>> ds = datasets.digits()
        >>> res = fit_ppca(ds, latent_dim=2, epochs=2, batch_size=512, progress=False)
        >>> m = res["metrics"]
        >>> m["closed_form"]["train_log_lik"] >= m["svi"]["train_log_lik"]
        True
    """
    from sklearn.decomposition import PCA

    train, val, test = (t.double() for t in (ds.train, ds.val, ds.test))
    dim = ds.data_dim

    t0 = time.perf_counter()
    closed = PPCA(dim, latent_dim, name="ppca_closed_form").double().fit_closed_form(train)
    closed_time = time.perf_counter() - t0

    sk = PCA(n_components=latent_dim, svd_solver="full").fit(train.numpy())

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    svi = PPCA(dim, latent_dim, name="ppca").double()
    num_steps = epochs * (1 if batch_size is None else math.ceil(len(train) / batch_size))
    optimizer = _decaying_adam(lr, final_lr, num_steps)
    t0 = time.perf_counter()
    history = fit(svi.model, svi.guide, train, optimizer=optimizer, epochs=epochs,
                  batch_size=batch_size, val_data=val, seed=seed, checkpoint=checkpoint,
                  resume=resume, progress=progress, desc="PPCA (SVI)", restore_best=False)
    svi_time = time.perf_counter() - t0
    test_loss = evaluate_loss(svi.model, svi.guide, test, seed=seed)

    with torch.no_grad():
        cf = {part: _mean(closed.log_likelihood(x))
              for part, x in (("train", train), ("val", val), ("test", test))}
        sv = {part: _mean(svi.log_likelihood(x))
              for part, x in (("train", train), ("val", val), ("test", test))}
    metrics = {
        "data": ds.name,
        "latent_dim": latent_dim,
        "closed_form": {
            "train_log_lik": cf["train"], "val_log_lik": cf["val"], "test_log_lik": cf["test"],
            "noise_variance": float(closed.noise_variance.detach()),
            "fit_time_s": closed_time,
        },
        "svi": {
            "train_log_lik": sv["train"], "val_log_lik": sv["val"], "test_log_lik": sv["test"],
            "test_elbo": -test_loss,
            "final_train_loss": history.train_loss[-1] if history.train_loss else math.nan,
            "noise_variance": float(svi.noise_variance.detach()),
            "epochs": len(history.epoch), "num_steps": history.num_steps,
            "batch_size": batch_size, "lr": lr, "final_lr": final_lr,
            "stop_reason": history.stop_reason,
            "fit_time_s": svi_time,
        },
        "sklearn": {
            "train_log_lik": float(sk.score(train.numpy())),
            "test_log_lik": float(sk.score(test.numpy())),
            "noise_variance": float(sk.noise_variance_),
        },
        # Closed form minus SVI: >= 0 on train (the closed form is the maximum).
        "gap_train": cf["train"] - sv["train"],
        "gap_test": cf["test"] - sv["test"],
        "sklearn_gap_test": cf["test"] - float(sk.score(test.numpy())),
    }
    return {"metrics": metrics, "history": history, "svi": svi, "closed_form": closed}


def bernoulli_baseline_log_lik(train: torch.Tensor, test: torch.Tensor) -> float:
    """Per-datapoint log-likelihood on ``test`` of independent Bernoulli pixels fitted to
    ``train`` (with add-one smoothing): the bar any latent-variable model should clear.

    >>> x = torch.tensor([[0., 1.], [1., 1.]])  # smoothed p = (2/4, 3/4)
    >>> round(bernoulli_baseline_log_lik(x, x), 4)  # log(1/2) + log(3/4)
    -0.9808
    """
    p = (train.double().sum(0) + 1.0) / (len(train) + 2.0)
    x = test.double()
    return float((x * p.log() + (1 - x) * (-p).log1p()).sum(-1).mean())


def fit_vae(ds: Dataset, latent_dim: int = 8, hidden: Sequence[int] = (128,), epochs: int = 100,
            batch_size: int = 128, lr: float = 3e-3, seed: int = 0, checkpoint=None,
            resume: bool = False, progress: bool = True) -> dict:
    """Fit a Bernoulli VAE to the binary images of ``ds`` by SVI (Trace_ELBO, Adam).

    Reports the test ELBO per datapoint (``-evaluate_loss`` on the test set) next to the
    log-likelihood of independent Bernoulli pixels, the trivial baseline it should beat.
    Returns ``{"metrics": ..., "history": ..., "vae": VAE}``.

    Example:
        >>> ds = datasets.digits(binarize="static")
        >>> res = fit_vae(ds, latent_dim=2, hidden=(16,), epochs=1, progress=False)
        >>> res["metrics"]["epochs"], res["metrics"]["test_elbo"] < 0
        (1, True)
    """
    if not bool(((ds.train == 0) | (ds.train == 1)).all()):
        raise ValueError("the Bernoulli VAE needs binary data: load it with binarize='static'")
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    vae = VAE(ds.data_dim, latent_dim, hidden=tuple(hidden))
    t0 = time.perf_counter()
    history = fit(vae.model, vae.guide, ds.train, optimizer=pyro.optim.Adam({"lr": lr}),
                  epochs=epochs, batch_size=batch_size, val_data=ds.val, seed=seed,
                  checkpoint=checkpoint, resume=resume, progress=progress, desc="VAE")
    fit_time = time.perf_counter() - t0
    test_loss = evaluate_loss(vae.model, vae.guide, ds.test, seed=seed)
    finite_val = [v for v in history.val_loss if math.isfinite(v)]
    metrics = {
        "data": ds.name,
        "latent_dim": latent_dim,
        "hidden": list(hidden),
        "epochs": len(history.epoch),
        "num_steps": history.num_steps,
        "batch_size": batch_size,
        "lr": lr,
        "stop_reason": history.stop_reason,
        "best_epoch": history.best_epoch,
        "final_train_elbo": -history.train_loss[-1] if history.train_loss else math.nan,
        "best_val_elbo": -min(finite_val) if finite_val else math.nan,
        "test_elbo": -test_loss,
        "baseline_test_log_lik": bernoulli_baseline_log_lik(ds.train, ds.test),
        "fit_time_s": fit_time,
    }
    return {"metrics": metrics, "history": history, "vae": vae}


def latent_diagnostics(model, guide, train: torch.Tensor, test: torch.Tensor,
                       num_particles: int = 5000, seed: int = 0) -> dict:
    """Information terms on the training set, importance-sampled log p(x) on the test set,
    and draws of the aggregate posterior and of the prior (for the figures).

    >>> vae = VAE(64, 2, hidden=(8,))
    >>> ds = datasets.digits(binarize="static")
    >>> d = latent_diagnostics(vae.model, vae.guide, ds.train[:100], ds.test[:10], 50)
    >>> sorted(d["metrics"])[:3]
    ['active_units', 'distortion', 'ess_median']
    """
    t0 = time.perf_counter()
    info = information(model, guide, train, seed=seed)
    evidence = log_likelihood(model, guide, test, num_particles=num_particles, seed=seed)
    q = AggregatePosterior.from_guide(guide, train)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        prior = sample_prior(model, train, q.blocks)
    summary = evidence.summary()
    metrics = {
        "rate": float(info.rate), "distortion": float(info.distortion),
        "mutual_information": float(info.mutual_information),
        "mutual_information_se": info.mutual_information.se,
        "mutual_information_ceiling": info.mutual_information_ceiling,
        "marginal_kl": float(info.marginal_kl), "marginal_kl_se": info.marginal_kl.se,
        "total_correlation": (None if info.total_correlation is None
                              else float(info.total_correlation)),
        "active_units": info.active_units,
        "test_log_px": summary["mean_log_px"], "test_log_px_se": summary["se_log_px"],
        "num_particles": num_particles, "ess_median": summary["ess_median"],
        "khat_max": summary["khat_max"], "khat_flagged_fraction": summary["flagged_fraction"],
        "time_s": time.perf_counter() - t0,
    }
    return {"metrics": metrics, "information": info, "evidence": evidence,
            "posterior_draws": q.sample(len(train), generator=gen), "prior_draws": prior}


# -- report -------------------------------------------------------------------------------------
def _clip01(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clamp(0.0, 1.0)


def ppca_section(report: Report, result: dict, ds: Dataset, num_images: int = 10) -> None:
    """Add the PPCA section (numbers, training curve, reconstructions) to ``report``.

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
                num_samples: int = 30, seed: int = 0) -> None:
    """Add the VAE section (numbers, curves, reconstructions, prior samples) to ``report``.

    >>> ds = datasets.digits(binarize="static")
    >>> rep = Report("t")
    >>> vae_section(rep, fit_vae(ds, 2, (8,), epochs=1, progress=False), ds)
    >>> "VAE" in rep.render()
    True
    """
    m = result["metrics"]
    vae = result["vae"]
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
    pyro.set_rng_seed(seed)
    samples = vae.sample(num_samples, mean=True)
    report.add_figure(
        image_grid(samples, ds.image_shape, title="VAE samples: pixel probabilities of p(x|z), "
                                                  "z ~ p(z)"),
        caption="Decoded draws from the prior.")


def diagnostics_section(report: Report, diag: dict, name: str) -> None:
    """Add the latent diagnostics of a fitted model (information, q(z) against p(z),
    importance-sampled evidence) to ``report``.

    >>> vae = VAE(64, 2, hidden=(8,))
    >>> ds = datasets.digits(binarize="static")
    >>> rep = Report("t")
    >>> diagnostics_section(rep, latent_diagnostics(vae.model, vae.guide, ds.train[:100],
    ...                                             ds.test[:10], 50), "VAE")
    >>> "aggregate posterior" in rep.render()
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
        "active units (Cov_x E[z_i|x] > 0.01)": f"{m['active_units']} of {len(info.unit_activity)}",
        f"test log p(x), {m['num_particles']} importance samples":
            fmt.format(m["test_log_px"], m["test_log_px_se"]),
        "median ESS / share of k-hat > 0.7": f"{m['ess_median']:.0f} / "
                                              f"{100 * m['khat_flagged_fraction']:.1f}%",
    })
    report.add_figure(plot_aggregate_vs_prior(diag["posterior_draws"], diag["prior_draws"]),
                      caption="The aggregate posterior q(z) = mean_n q(z|x_n) against the "
                              "prior p(z): 1-D marginals and q's two principal axes.")
    report.add_figure(plot_kl_per_dim(info),
                      caption="Per-coordinate KL(q(z_i) || p(z_i)) and unit activity.")
    report.add_figure(plot_evidence_diagnostics(diag["evidence"]),
                      caption="Reliability of the importance-sampled log p(x) on the test "
                              "set: effective sample size and Pareto k-hat per datapoint.")


def bayes_loop_section(report: Report, results: dict, seed: int = 0) -> dict:
    """Add the Bayes' loop results (one row per fitted model) to ``report``, with the rank
    histograms of the first that fails (or of the last). Returns their metrics.

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


# -- files --------------------------------------------------------------------------------------
def _jsonable(obj):
    """Plain JSON: tensors and numpy scalars to numbers, NaN/inf to null, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(obj, path) -> Path:
    """Write ``obj`` as strict JSON (NaN and inf become null), indented; returns the path.

    >>> import tempfile
    >>> p = write_json({"a": float("nan"), "b": (1, 2)}, Path(tempfile.mkdtemp()) / "m.json")
    >>> p.read_text()
    '{\\n  "a": null,\\n  "b": [\\n    1,\\n    2\\n  ]\\n}\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n",
                    encoding="utf-8")
    return path


def versions() -> dict[str, str]:
    """Versions of Python and of the packages the numbers depend on.

    >>> sorted(versions())[:3]
    ['matplotlib', 'numpy', 'pyro-ppl']
    """
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("pyro_lvm", "pyro-ppl", "torch", "numpy", "scikit-learn", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return dict(sorted(out.items()))


def _settings_table(report: Report, info: dict) -> None:
    report.add_heading("Run", level=2)
    report.add_table(info, headers=("setting", "value"))


# -- commands -----------------------------------------------------------------------------------
def run_fit(model: str, out, data: str = "digits", epochs: int = 20, batch_size: int = 128,
            latent_dim: int = 8, lr: float | None = None, seed: int = 0,
            hidden: Sequence[int] | None = None, resume: bool = False,
            progress: bool = True) -> dict:
    """``pyro-lvm fit``: train one built-in model, write history, metrics, checkpoint, report.

    Returns the metrics written to ``out/metrics.json``.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> m = run_fit("ppca", out, epochs=1, latent_dim=2, progress=False)
        >>> sorted(p.name for p in out.iterdir())
        ['checkpoint.pt', 'history.json', 'metrics.json', 'report.html']
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if data not in datasets.DATASETS:
        raise ValueError(f"data must be one of {tuple(datasets.DATASETS)}, got {data!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    loader = datasets.DATASETS[data]
    common = {"epochs": epochs, "batch_size": batch_size, "seed": seed,
              "checkpoint": out / "checkpoint.pt", "resume": resume, "progress": progress}
    report = Report(f"pyro-lvm fit: {model} on {data}")
    if model == "ppca":
        ds = loader(seed=seed)
        result = fit_ppca(ds, latent_dim, lr=1e-2 if lr is None else lr, **common)
    else:
        ds = loader(binarize="static", seed=seed)
        result = fit_vae(ds, latent_dim, hidden=(128,) if hidden is None else hidden,
                         lr=3e-3 if lr is None else lr, **common)
    metrics = {"command": "fit", "model": model, model: result["metrics"],
               "data_sizes": ds.sizes}
    _settings_table(report, {"model": model, "data": ds.name, "seed": seed,
                             "train / val / test": "{train} / {val} / {test}".format(**ds.sizes)})
    (ppca_section if model == "ppca" else vae_section)(report, result, ds)
    fitted = result["svi" if model == "ppca" else "vae"]
    train, test = ((ds.train.double(), ds.test.double()) if model == "ppca"
                   else (ds.train, ds.test))
    diag = latent_diagnostics(fitted.model, fitted.guide, train, test, num_particles=1000,
                              seed=seed)
    result["metrics"]["diagnostics"] = diag["metrics"]
    diagnostics_section(report, diag, model.upper())
    metrics["wall_time_s"] = time.perf_counter() - t0
    metrics["versions"] = versions()
    write_json(result["history"].to_dict(), out / "history.json")
    write_json(metrics, out / "metrics.json")
    report.save(out / "report.html")
    return metrics


def run_demo(out, fast: bool = False, seed: int = 0, progress: bool = True,
             log=print) -> dict:
    """``pyro-lvm demo``: PPCA (closed form vs SVI vs scikit-learn) and a VAE on the digits.

    Writes ``out/report.html`` and ``out/metrics.json`` and returns the metrics.
    ``fast=True`` uses a few epochs only (for tests; the numbers are then unconverged).

    Example:
        >>> import tempfile
        >>> m = run_demo(tempfile.mkdtemp(), fast=True, progress=False, log=lambda s: None)
        >>> m["ppca"]["closed_form"]["train_log_lik"] >= m["ppca"]["svi"]["train_log_lik"]
        True
    """
    settings = DEMO_SETTINGS["fast" if fast else "full"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch_threads = torch.get_num_threads()

    log(f"[1/2] PPCA on the 8x8 digits: closed form, SVI ({settings['ppca']['epochs']} "
        f"epochs), scikit-learn")
    ds = datasets.digits(seed=seed)
    ppca = fit_ppca(ds, seed=seed, progress=progress, **settings["ppca"])
    pm = ppca["metrics"]
    log(f"      log p(x) per datapoint, train / test: closed form "
        f"{pm['closed_form']['train_log_lik']:.4f} / {pm['closed_form']['test_log_lik']:.4f}, "
        f"SVI {pm['svi']['train_log_lik']:.4f} / {pm['svi']['test_log_lik']:.4f}, "
        f"sklearn {pm['sklearn']['train_log_lik']:.4f} / {pm['sklearn']['test_log_lik']:.4f}")
    log(f"      gap closed form - SVI: {pm['gap_train']:.4f} nats/datapoint (train)")

    log(f"[2/2] VAE on the statically binarized digits ({settings['vae']['epochs']} epochs)")
    ds_bin = datasets.digits(binarize="static", seed=seed)
    vae = fit_vae(ds_bin, seed=seed, progress=progress, **settings["vae"])
    vm = vae["metrics"]
    log(f"      test ELBO {vm['test_elbo']:.3f} nats/datapoint "
        f"(independent-pixel baseline {vm['baseline_test_log_lik']:.3f})")
    diag = latent_diagnostics(vae["vae"].model, vae["vae"].guide, ds_bin.train, ds_bin.test,
                              seed=seed, **settings["diagnostics"])
    dm = diag["metrics"]
    vm["diagnostics"] = dm
    log(f"      test log p(x) {dm['test_log_px']:.3f} ({dm['num_particles']} importance "
        f"samples); rate {dm['rate']:.3f} = I {dm['mutual_information']:.3f} + "
        f"KL(q(z)||p(z)) {dm['marginal_kl']:.3f}; {dm['active_units']} active units")
    train_time = time.perf_counter() - t0

    report = Report("pyro-lvm demo: PPCA and a VAE on the 8x8 digits")
    report.add_paragraph(
        "Everything on this page was computed by `pyro-lvm demo"
        + (" --fast" if fast else "") + "`" + (
            " in fast mode: few epochs, the numbers are not converged." if fast else "."),
        note=True)
    _settings_table(report, {
        "data": "sklearn.datasets.load_digits, pixels / 16",
        "train / val / test": "{train} / {val} / {test}".format(**ds.sizes),
        "seed": seed, "torch threads": torch_threads,
        "training time (s)": train_time,
    })
    ppca_section(report, ppca, ds)
    vae_section(report, vae, ds_bin, seed=seed)
    diagnostics_section(report, diag, "VAE")
    closed = ppca["closed_form"]
    loops = {
        "PPCA (closed form, exact posterior)":
            bayes_loop(closed.model, closed.exact_posterior, ds.train.double(), seed=seed),
        "VAE (its encoder)": bayes_loop(vae["vae"].model, vae["vae"].guide, ds_bin.train,
                                        seed=seed),
    }
    vm["bayes_loop"] = bayes_loop_section(report, loops)
    for label, result in loops.items():
        log(f"      Bayes' loop, {label}: {'passed' if result.passed else 'FAILED'} "
            f"(p = {result.p_value:.3g})")
    report.add_heading("Versions")
    report.add_table(versions(), headers=("package", "version"))

    metrics = {
        "command": "demo", "fast": fast, "seed": seed,
        "data_sizes": ds.sizes,
        "ppca": pm, "vae": vm,
        "versions": versions(),
        "torch_threads": torch_threads,
    }
    path = report.save(out / "report.html")
    metrics["wall_time_s"] = time.perf_counter() - t0
    write_json(metrics, out / "metrics.json")
    log(f"Wrote {out / 'metrics.json'}")
    log(f"Report written to {Path(path).resolve()} ({metrics['wall_time_s']:.1f} s)")
    return metrics


# -- argument parsing ---------------------------------------------------------------------------
def _number(convert, minimum, what: str, strict: bool = False):
    """An argparse type: ``convert(text)`` that is finite and >= (or, if strict, >) minimum."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < minimum or (
                strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return parse


_positive_int = _number(int, 1, "a positive integer")
_nonnegative_int = _number(int, 0, "a non-negative integer")
_positive_float = _number(float, 0.0, "a finite positive number", strict=True)


def _hidden_sizes(text: str) -> tuple[int, ...]:
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(
            f"must be positive integers separated by commas (e.g. 128 or 256,128), got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyro-lvm`` command.

    >>> build_parser().parse_args(["demo", "--out", "d", "--fast"]).fast
    True
    """
    parser = argparse.ArgumentParser(
        prog=PROG, description="Fit and diagnose latent-variable models written in Pyro.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p_fit = sub.add_parser(
        "fit", help="train one built-in model and write history, metrics, checkpoint, report",
        description="Train one built-in model; write DIR/history.json, DIR/metrics.json, "
                    "DIR/checkpoint.pt and DIR/report.html.")
    p_fit.add_argument("--model", required=True, choices=MODELS, help="which model")
    p_fit.add_argument("--data", default="digits", choices=tuple(datasets.DATASETS),
                       help="built-in data set (default: digits)")
    p_fit.add_argument("--epochs", type=_positive_int, default=20, help="default: 20")
    p_fit.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p_fit.add_argument("--latent-dim", type=_positive_int, default=8, help="default: 8")
    p_fit.add_argument("--batch-size", type=_positive_int, default=128, help="default: 128")
    p_fit.add_argument("--lr", type=_positive_float, default=None,
                       help="Adam learning rate (default: 0.01 for ppca, 0.003 for vae)")
    p_fit.add_argument("--seed", type=_nonnegative_int, default=0,
                       help="seed of the data split, binarization, initialization and training")
    p_fit.add_argument("--hidden", type=_hidden_sizes, default=None,
                       help="vae only: hidden layer sizes, comma-separated (default: 128)")
    p_fit.add_argument("--resume", action="store_true",
                       help="continue from DIR/checkpoint.pt")
    p_fit.add_argument("--quiet", action="store_true", help="no progress bars")

    p_demo = sub.add_parser(
        "demo", help="PPCA and a VAE on the 8x8 digits, with an HTML report",
        description="Train a PPCA (closed form vs SVI vs scikit-learn) and a small VAE on the "
                    "8x8 digits; write DIR/report.html and DIR/metrics.json.")
    p_demo.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p_demo.add_argument("--fast", action="store_true",
                        help="a few epochs only (seconds; numbers not converged)")
    p_demo.add_argument("--seed", type=_nonnegative_int, default=0, help="default: 0")
    p_demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _check_fit_args(args: argparse.Namespace) -> None:
    """Constraints between arguments that argparse cannot express (raises ValueError)."""
    if args.hidden is not None and args.model != "vae":
        raise ValueError("argument --hidden: only applies to --model vae")
    if args.model == "ppca":
        data_dim = datasets.DATASETS[args.data]().data_dim
        if args.latent_dim >= data_dim:
            raise ValueError(f"argument --latent-dim: PPCA needs latent_dim < {data_dim} "
                             f"(the data dimension), got {args.latent_dim}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyro-lvm`` command with ``argv`` (default ``sys.argv[1:]``); returns the
    exit status: 0 on success, 2 for invalid arguments (one line on stderr, no traceback).

    >>> main(["fit", "--model", "ppca", "--epochs", "0", "--out", "x"])
    2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage and message
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "fit":
            _check_fit_args(args)
            metrics = run_fit(args.model, args.out, data=args.data, epochs=args.epochs,
                              batch_size=args.batch_size, latent_dim=args.latent_dim,
                              lr=args.lr, seed=args.seed, hidden=args.hidden,
                              resume=args.resume, progress=not args.quiet)
            print(json.dumps(_jsonable(metrics[args.model]), indent=2))
            print(f"Report written to {(Path(args.out) / 'report.html').resolve()}")
        else:
            run_demo(args.out, fast=args.fast, seed=args.seed, progress=not args.quiet)
    except ValueError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, TrainingDivergedError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
