"""Recipes: the built-in experiments of the ``pyro-lvm`` command and the demo, as functions.

Each recipe fits one built-in model to a :class:`~pyro_lvm.datasets.Dataset` and returns its
numbers (``{"metrics": ..., "history": ..., "fitted": model, ...}``); nothing here writes files
or HTML (see :mod:`pyro_lvm.runs` and :mod:`pyro_lvm.report_sections`). :data:`BUILTIN_MODELS`
is the one table of the built-in models: how to load their data and fit them. Their defaults
(learning rate, hidden sizes, ...) are the defaults of the ``fit_*`` functions, read from
their signatures, and nowhere else.

Imports of torch, Pyro and the rest of pyro_lvm are made inside the functions, so that the
command line can read the table (``pyro-lvm --help``) without loading torch.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from .datasets import Dataset

__all__ = [
    "BUILTIN_MODELS",
    "DEMO_SETTINGS",
    "LATENT_DIAGNOSTICS",
    "BuiltinModel",
    "bernoulli_baseline_log_lik",
    "fit_ppca",
    "fit_vae",
    "latent_diagnostics",
    "restore_fit",
]


def _mean(t: torch.Tensor) -> float:
    return float(t.detach().double().mean())


def _decaying_adam(lr: float, final_lr: float | None, num_steps: int):
    """Adam whose learning rate decays geometrically from ``lr`` to ``final_lr`` over
    ``num_steps`` steps (ClippedAdam's per-step ``lrd``), with clipping switched off."""
    import pyro.optim

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
    Everything runs in float64. Returns ``{"metrics": ..., "history": ...,
    "fitted": PPCA (the SVI fit, also under "svi"), "closed_form": PPCA}``; all
    log-likelihoods are per datapoint, in nats.

    Example:
        >>> from pyro_lvm import datasets
        >>> ds = datasets.digits()
        >>> res = fit_ppca(ds, latent_dim=2, epochs=2, batch_size=512, progress=False)
        >>> m = res["metrics"]
        >>> m["closed_form"]["train_log_lik"] >= m["svi"]["train_log_lik"]
        True
    """
    import pyro
    import torch
    from sklearn.decomposition import PCA

    from .infer import evaluate_loss, fit
    from .models import PPCA

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
        "seed": seed,
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
    return {"metrics": metrics, "history": history, "fitted": svi, "svi": svi,
            "closed_form": closed}


def bernoulli_baseline_log_lik(train: torch.Tensor, test: torch.Tensor) -> float:
    """Per-datapoint log-likelihood on ``test`` of independent Bernoulli pixels fitted to
    ``train`` (with add-one smoothing): the bar any latent-variable model should clear.

    >>> import torch
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
    Returns ``{"metrics": ..., "history": ..., "fitted": VAE (also under "vae")}``.

    Example:
        >>> from pyro_lvm import datasets
        >>> ds = datasets.digits(binarize="static")
        >>> res = fit_vae(ds, latent_dim=2, hidden=(16,), epochs=1, progress=False)
        >>> res["metrics"]["epochs"], res["metrics"]["test_elbo"] < 0
        (1, True)
    """
    import pyro
    import pyro.optim

    from .infer import evaluate_loss, fit
    from .models import VAE

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
        "seed": seed,
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
    return {"metrics": metrics, "history": history, "fitted": vae, "vae": vae}


#: The diagnostics :func:`latent_diagnostics` can compute (``pyro-lvm diagnose --only``).
LATENT_DIAGNOSTICS = ("information", "evidence")


def latent_diagnostics(model, guide, train: torch.Tensor, test: torch.Tensor,
                       num_particles: int = 5000, seed: int = 0,
                       parts: Sequence[str] = LATENT_DIAGNOSTICS) -> dict:
    """Information terms on the training set, with draws of the aggregate posterior and of the
    prior (for the figures), and importance-sampled log p(x) on the test set: the ``parts``
    named ("information", "evidence"; default both).

    Returns ``{"metrics": {...}, "information": Information, "posterior_draws": ...,
    "prior_draws": ..., "evidence": Evidence}`` with the keys of the parts computed.

    >>> from pyro_lvm import datasets
    >>> from pyro_lvm.models import VAE
    >>> vae = VAE(64, 2, hidden=(8,))
    >>> ds = datasets.digits(binarize="static")
    >>> d = latent_diagnostics(vae.model, vae.guide, ds.train[:100], ds.test[:10], 50)
    >>> sorted(d["metrics"])[:3]
    ['active_units', 'distortion', 'ess_median']
    >>> sorted(latent_diagnostics(vae.model, vae.guide, ds.train[:100], ds.test[:10], 50,
    ...                           parts=["evidence"]))
    ['evidence', 'metrics']
    """
    from .diagnostics import information, log_likelihood, sample_prior
    from .rng import generator, seeded

    unknown = sorted(set(parts) - set(LATENT_DIAGNOSTICS))
    if unknown or not parts:
        raise ValueError(f"latent_diagnostics: parts must be some of {LATENT_DIAGNOSTICS}, got "
                         f"{list(parts)!r}")
    t0 = time.perf_counter()
    out, metrics = {}, {}
    if "information" in parts:
        info = information(model, guide, train, seed=seed)
        q = info.aggregate  # built by information() on the training rows
        with seeded(seed):
            prior = sample_prior(model, train, q.blocks)
        metrics.update({
            "rate": float(info.rate), "distortion": float(info.distortion),
            "mutual_information": float(info.mutual_information),
            "mutual_information_se": info.mutual_information.se,
            "mutual_information_ceiling": info.mutual_information_ceiling,
            "marginal_kl": float(info.marginal_kl), "marginal_kl_se": info.marginal_kl.se,
            "total_correlation": (None if info.total_correlation is None
                                  else float(info.total_correlation)),
            "active_units": info.active_units,
            "information_nonfinite": sum(info.nonfinite.values()),  # 0 unless some are nan/inf
        })
        out.update(information=info, prior_draws=prior,
                   posterior_draws=q.sample(len(train), generator=generator(seed)))
    if "evidence" in parts:
        evidence = log_likelihood(model, guide, test, num_particles=num_particles, seed=seed)
        summary = evidence.summary()
        metrics.update({
            "test_log_px": summary["mean_log_px"], "test_log_px_se": summary["se_log_px"],
            "num_particles": num_particles, "ess_median": summary["ess_median"],
            "khat_max": summary["khat_max"],
            "khat_flagged_fraction": summary["flagged_fraction"],
            "test_nonfinite_fraction": summary["nonfinite_fraction"],
        })
        out["evidence"] = evidence
    metrics["time_s"] = time.perf_counter() - t0
    return {"metrics": metrics, **out}


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in model of the command line: its recipe and the data it needs.

    ``restore(fitted, ds, metrics)`` rebuilds what ``fit`` returned besides its metrics,
    history and fitted model, from a reloaded fit (:func:`restore_fit`).
    ``data_options`` are keyword arguments of the data set's loader (the Bernoulli VAE needs
    binary pixels); ``precision`` is the dtype the recipe fits in (PPCA: float64), which
    the diagnostics of the fitted model use too; ``latent_below_data``: the model needs
    fewer latent than data dimensions (PPCA's noise variance is the mean of the discarded
    eigenvalues).

    >>> BUILTIN_MODELS["vae"].defaults["hidden"]
    (128,)
    """

    name: str
    fit: Callable[..., dict]
    summary: str
    restore: Callable[..., dict]
    data_options: Mapping[str, object] = field(default_factory=dict)
    precision: str = "float32"
    latent_below_data: bool = False

    @property
    def dtype(self) -> torch.dtype:
        """``precision`` as a torch dtype."""
        import torch

        return getattr(torch, self.precision)

    @property
    def defaults(self) -> dict[str, object]:
        """The recipe's keyword defaults (its signature is their one home)."""
        return {name: p.default for name, p in inspect.signature(self.fit).parameters.items()
                if p.default is not inspect.Parameter.empty}

    def load(self, data: str, seed: int = 0) -> Dataset:
        """The built-in data set ``data`` prepared for this model."""
        from . import datasets

        return datasets.DATASETS[data](seed=seed, **self.data_options)


def _restore_ppca(fitted, ds: Dataset, metrics: dict) -> dict:
    """fit_ppca's other results: the closed-form fit (deterministic) and the SVI fit."""
    from .models import PPCA

    closed = PPCA(ds.data_dim, metrics["latent_dim"], name="ppca_closed_form").double()
    return {"closed_form": closed.fit_closed_form(ds.train.double()), "svi": fitted}


def _restore_vae(fitted, ds: Dataset, metrics: dict) -> dict:
    return {"vae": fitted}


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "ppca": BuiltinModel("ppca", fit_ppca, "probabilistic PCA: closed form, SVI, scikit-learn",
                         _restore_ppca, precision="float64", latent_below_data=True),
    "vae": BuiltinModel("vae", fit_vae, "Bernoulli VAE on binarized pixels", _restore_vae,
                        data_options={"binarize": "static"}),
}


def restore_fit(model: str, loaded, ds: Dataset, metrics: dict) -> dict:
    """What the recipe of ``model`` returned, rebuilt from a reloaded fit (``loaded``, a
    :class:`~pyro_lvm.saving.LoadedModel`), its data set and its saved metrics (the recipe's
    own, ``metrics[model]``): ``{"metrics", "history", "fitted", ...}`` as ``fit`` returns
    it, without refitting. (tests/test_cli.py checks it through ``pyro-lvm diagnose``.)

    >>> import tempfile
    >>> from pyro_lvm import datasets, load, save
    >>> from pyro_lvm.models import PPCA
    >>> ds = datasets.digits()
    >>> d = save(tempfile.mkdtemp(), PPCA(64, 2).double(), dataset={"name": "digits"})
    >>> sorted(restore_fit("ppca", load(d), ds, {"latent_dim": 2}))
    ['closed_form', 'fitted', 'history', 'metrics', 'svi']
    """
    fitted = loaded.objects["model"]
    return {"metrics": metrics, "history": loaded.history, "fitted": fitted,
            **BUILTIN_MODELS[model].restore(fitted, ds, metrics)}

# Settings of `pyro-lvm demo` (and of `--fast`, for tests), where they differ from the
# recipes' defaults. PPCA: full-batch SVI with a decaying learning rate, so the random start
# ends within a few hundredths of a nat of the closed-form maximum likelihood. VAE: small MLPs
# on the statically binarized digits.
DEMO_SETTINGS = {
    "full": {
        "ppca": {"epochs": 800, "batch_size": None, "lr": 0.1, "final_lr": 1e-3},
        "vae": {"epochs": 200},
        "diagnostics": {"num_particles": 5000},
    },
    "fast": {
        "ppca": {"epochs": 40, "batch_size": None, "lr": 0.1, "final_lr": 1e-3},
        "vae": {"hidden": (64,), "epochs": 4},
        "diagnostics": {"num_particles": 200},
    },
}
