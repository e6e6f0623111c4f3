"""Runs: a recipe, its report and its files, as ``pyro-lvm fit``, ``diagnose`` and ``demo`` do
them.

A run computes its numbers with :mod:`pyro_lvm.recipes`, then builds the report from them with
:mod:`pyro_lvm.report_sections`, and writes every file atomically
(:func:`pyro_lvm.files.write_json`). The command line (:mod:`pyro_lvm.cli`) only parses
arguments and calls these.

The output directory is guarded (:func:`output_directory`): a run holds its lock while it
writes there, checks the free space before training, refuses a directory that already holds
a run unless told to overwrite (or, ``fit``, to resume) it, and, interrupted (Ctrl-C), keeps
what it has computed so far and raises :class:`RunInterrupted` saying what it kept.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch

from . import datasets
from .diagnostics import bayes_loop
from .files import check_free_space, directory_lock, versions, write_json
from .infer import TrainingInterrupted
from .recipes import (
    BUILTIN_MODELS,
    DEMO_SETTINGS,
    LATENT_DIAGNOSTICS,
    fit_ppca,
    fit_vae,
    latent_diagnostics,
    restore_fit,
)
from .report import Report
from .report_sections import (
    MODEL_SECTIONS,
    bayes_loop_section,
    diagnostics_section,
    ppca_section,
    settings_table,
    vae_section,
    versions_section,
)
from .saving import (
    CHECKPOINT,
    MANIFEST,
    PARAMS,
    DataRecord,
    SavedModelError,
    load,
    save,
    update_metrics,
)

__all__ = ["DIAGNOSTICS", "FIT_PARTICLES", "RUN_FILES", "RunExists", "RunInterrupted",
           "output_directory", "run_demo", "run_diagnose", "run_fit", "versions"]


#: The diagnostics ``pyro-lvm fit`` computes and ``pyro-lvm diagnose --only`` can choose:
#: the information terms with q(z) against p(z), the importance-sampled log p(x) on the test
#: set, and the Bayes' loop.
DIAGNOSTICS = ("information", "evidence", "bayes-loop")
#: Importance samples per test point of ``fit``'s log p(x) (``diagnose --particles``).
FIT_PARTICLES = 1000
#: The files a run writes (``fit`` all of them, ``demo`` the metrics and the report): a
#: directory holding any of them holds a run.
RUN_FILES = ("history.json", "metrics.json", CHECKPOINT, "report.html", MANIFEST, PARAMS)


class RunExists(FileExistsError):
    """The output directory already holds a run, and neither overwriting nor resuming it
    was asked for."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C; its message says what it kept in its directory."""


@contextlib.contextmanager
def output_directory(out, command: str, existing: str = "refuse"):
    """Guard the directory ``out`` that ``command`` writes to, before any work is done:
    create it, take its lock (:func:`pyro_lvm.files.directory_lock`: a second command
    writing there fails at once), check the free space
    (:func:`pyro_lvm.files.check_free_space`), then deal with a run already there
    (:data:`RUN_FILES`) as ``existing`` says: ``"refuse"`` (:class:`RunExists`),
    ``"overwrite"`` (its files are removed, so that the new run's cannot mix with them),
    ``"resume"`` (kept: ``fit --resume`` continues it) or ``"keep"`` (``diagnose`` rewrites
    some of them; ``out`` must exist). The lock is released, and its file removed, on exit.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "metrics.json").write_text("{}")
    >>> with output_directory(d, "demo"):
    ...     pass
    Traceback (most recent call last):
    ...
    pyro_lvm.runs.RunExists: ... already holds a run (metrics.json); pass --overwrite to ...
    """
    if existing not in ("refuse", "overwrite", "resume", "keep"):
        raise ValueError(f"existing must be refuse, overwrite, resume or keep, got {existing!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, not a directory")
    if existing != "keep":
        out.mkdir(parents=True, exist_ok=True)
    with directory_lock(out, command):
        check_free_space(out)
        found = [name for name in RUN_FILES if (out / name).exists()]
        if found and existing == "refuse":
            raise RunExists(f"{out} already holds a run ({', '.join(found)}); pass --overwrite "
                            "to replace it" + (", --resume to continue it" if CHECKPOINT in found
                                                and command == "fit" else "")
                            + ", or write to another directory")
        if existing == "overwrite":
            for name in found:
                (out / name).unlink()
        yield out


def _kept(out: Path) -> str:
    files = [name for name in RUN_FILES if (out / name).exists()]
    return f"kept in {out}: {', '.join(files)}" if files else f"nothing was written to {out}"


def run_fit(model: str, out, data: str = "digits", epochs: int = 20, seed: int = 0,
            resume: bool = False, progress: bool = True, image_shape=None,
            overwrite: bool = False, **options) -> dict:
    """``pyro-lvm fit``: train one built-in model, write history, metrics, checkpoint, report.

    ``model`` is a key of :data:`~pyro_lvm.recipes.BUILTIN_MODELS`; ``options`` are keyword
    arguments of its recipe (``latent_dim``, ``batch_size``, ``lr``, ``hidden`` for the VAE;
    None or absent means the recipe's default). ``data`` is a built-in data set's name or the
    path of a file of rows (:func:`pyro_lvm.datasets.load_file`, with ``image_shape`` when the
    rows are images). The fitted model is saved in ``out`` (:func:`pyro_lvm.saving.save`:
    ``pyro_lvm.load(out)`` reloads it; :func:`run_diagnose` recomputes its diagnostics).
    Returns the metrics written to ``out/metrics.json``.

    A directory that already holds a run is refused (:class:`RunExists`) unless ``resume``
    (continue it from its checkpoint) or ``overwrite`` (remove its files first). Interrupted
    (Ctrl-C), the run keeps its checkpoint (written every epoch; ``resume`` continues it),
    writes the history of the epochs completed, and raises :class:`RunInterrupted`.

    Example (seconds: it trains and draws the report; tests/test_cli.py runs it end to end
    and lists the files it writes)::

        metrics = run_fit("ppca", "runs/ppca", epochs=50, latent_dim=2)

    Options are checked against the recipe before anything is loaded or written:

    >>> run_fit("ppca", "runs/ppca", hidden=(64,))
    Traceback (most recent call last):
    ...
    ValueError: ppca has no option 'hidden' (its options: ['batch_size', ...])
    """
    if model not in BUILTIN_MODELS:
        raise ValueError(f"model must be one of {tuple(BUILTIN_MODELS)}, got {model!r}")
    recipe = BUILTIN_MODELS[model]
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(recipe.defaults))
    if unknown:
        raise ValueError(f"{model} has no option {unknown[0]!r} (its options: "
                         f"{sorted(recipe.defaults)})")
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run "
                         "in the directory, overwrite replaces it")
    existing = "resume" if resume else "overwrite" if overwrite else "refuse"
    with output_directory(out, "fit", existing) as out:
        return _run_fit(recipe, model, out, data, epochs, seed, resume, progress, image_shape,
                        options)


def _keeping_finished(metrics: dict, path: Path) -> dict:
    """``metrics`` of an interrupted run, with the metrics of a finished run already at
    ``path`` (a ``--resume`` of it was interrupted) kept under ``"previous"``.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "metrics.json"
    >>> _keeping_finished({"interrupted": "x"}, path)
    {'interrupted': 'x'}
    >>> _ = path.write_text('{"ppca": {"test_log_px": -3.5}}')
    >>> _keeping_finished({"interrupted": "x"}, path)["previous"]
    {'ppca': {'test_log_px': -3.5}}
    """
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return metrics
    if not isinstance(earlier, dict) or "interrupted" in earlier:
        return metrics  # nothing finished there, or the partial numbers of a like run
    return {**metrics, "previous": earlier}


def _run_fit(recipe, model, out: Path, data, epochs, seed, resume, progress, image_shape,
             options) -> dict:
    t0 = time.perf_counter()
    metrics = {"command": "fit", "model": model}
    if data in datasets.DATASETS:
        if image_shape is not None:
            raise ValueError("image_shape only applies to a data file")
        ds = recipe.load(data, seed=seed)
        source = DataRecord.describe({"name": data, "seed": seed, **recipe.data_options},
                                     loaded=ds)
    else:
        ds = datasets.load_file(data, image_shape=image_shape, seed=seed,
                                **recipe.data_options)
        source = ds
        metrics["data_file"] = {"path": str(Path(data).resolve()), "image_shape": (
            None if ds.image_shape is None else list(ds.image_shape)), "seed": seed}
    if recipe.latent_below_data and options.get("latent_dim", recipe.defaults.get(
            "latent_dim")) >= ds.data_dim:
        raise ValueError(f"{model} needs latent_dim < {ds.data_dim} (the data dimension)")
    result = None
    try:
        result = recipe.fit(ds, epochs=epochs, seed=seed, checkpoint=out / CHECKPOINT,
                            resume=resume, progress=progress, **options)
        metrics.update({model: result["metrics"], "data_sizes": ds.sizes})
        report = Report(f"pyro-lvm fit: {model} on {data}")
        settings_table(report, {"model": model, "data": ds.name, "seed": seed, "train / val / "
                                "test": "{train} / {val} / {test}".format(**ds.sizes)})
        _diagnose(report, model, result, ds, DIAGNOSTICS, FIT_PARTICLES, seed)
    except KeyboardInterrupt as exc:
        history = result["history"] if result is not None else getattr(exc, "history", None)
        stage = "after training, in the diagnostics" if result is not None else (
            f"in epoch {exc.epoch}" if isinstance(exc, TrainingInterrupted) else "")
        metrics.update({"interrupted": f"interrupted {stage}".strip(), "versions": versions()})
        if history is not None and history.epoch:
            write_json(history.to_dict(), out / "history.json")
            write_json(_keeping_finished(metrics, out / "metrics.json"), out / "metrics.json")
        if result is not None:  # trained: the model is saved, `diagnose` can finish the job
            save(out, result["fitted"], dataset=source, history=history, metrics=metrics)
        resumable = (out / CHECKPOINT).exists() and result is None
        raise RunInterrupted(
            f"{metrics['interrupted']}; {_kept(out)}"
            + (f"; --resume continues from {CHECKPOINT}" if resumable else "")
            + ("; `pyro-lvm diagnose` writes the report" if result is not None else "")
        ) from None
    metrics["versions"] = versions()
    versions_section(report, metrics["versions"])
    metrics["wall_time_s"] = time.perf_counter() - t0
    write_json(result["history"].to_dict(), out / "history.json")
    write_json(metrics, out / "metrics.json")
    save(out, result["fitted"], dataset=source, history=result["history"], metrics=metrics)
    report.save(out / "report.html")
    return metrics


def _diagnose(report: Report, model: str, result: dict, ds, parts, num_particles: int,
              seed: int) -> None:
    """The model's section and the diagnostics ``parts`` (of :data:`DIAGNOSTICS`) of a fit
    added to ``report``; their numbers go into ``result["metrics"]`` ("diagnostics",
    "bayes_loop"), replacing earlier values of the same names."""
    recipe = BUILTIN_MODELS[model]
    MODEL_SECTIONS[model](report, result, ds)
    fitted, m = result["fitted"], result["metrics"]
    train = ds.train.to(recipe.dtype)
    latent = [p for p in parts if p in LATENT_DIAGNOSTICS]
    if latent:
        diag = latent_diagnostics(fitted.model, fitted.guide, train, ds.test.to(recipe.dtype),
                                  num_particles=num_particles, seed=seed, parts=latent)
        m["diagnostics"] = {**m.get("diagnostics", {}), **diag["metrics"]}
        diagnostics_section(report, diag, model.upper())
    if "bayes-loop" in parts:
        loops = {}
        if "closed_form" in result:  # PPCA: the exact posterior is the loop's control
            closed = result["closed_form"]
            loops[f"{model.upper()} (closed form, exact posterior)"] = bayes_loop(
                closed.model, closed.exact_posterior, train, seed=seed)
        loops[f"{model.upper()} (its guide)"] = bayes_loop(fitted.model, fitted.guide, train,
                                                            seed=seed)
        m["bayes_loop"] = bayes_loop_section(report, loops)


def run_diagnose(run_dir, parts=DIAGNOSTICS, num_particles: int = FIT_PARTICLES,
                 seed: int | None = None, data=None) -> dict:
    """``pyro-lvm diagnose``: reload a run of ``pyro-lvm fit`` (:func:`pyro_lvm.load`), compute
    the diagnostics ``parts`` (of :data:`DIAGNOSTICS`) again with ``num_particles``
    importance samples and ``seed`` (default: the fit's, which reproduces its numbers), and
    rewrite ``run_dir/report.html`` and ``run_dir/metrics.json`` (and the metrics in
    ``saved_model.json``); diagnostics not chosen keep their earlier numbers in the metrics.
    The parameters are not touched. Returns the metrics.

    The data come back from their record: a built-in data set is recreated with its seed; a
    data file is read again from where the fit found it (or from ``data``, if it moved) and
    must hash as it did. Raises :class:`~pyro_lvm.saving.SavedModelError` for a directory
    that is not a fit run or whose data changed.

    Example (tests/test_diagnose.py runs it on fitted runs)::

        metrics = run_diagnose("runs/vae", parts=["evidence"], num_particles=5000)
        metrics["vae"]["diagnostics"]["num_particles"]  # 5000

    The diagnostics chosen are checked before the run is read:

    >>> run_diagnose("runs/vae", parts=["evidence", "elbo"])
    Traceback (most recent call last):
    ...
    ValueError: diagnostics must be some of information, evidence, bayes-loop; got evidence, elbo
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    parts = list(dict.fromkeys(parts))
    unknown = [p for p in parts if p not in DIAGNOSTICS]
    if unknown or not parts:
        raise ValueError(f"diagnostics must be some of {', '.join(DIAGNOSTICS)}; got "
                         f"{', '.join(parts) or 'none'}")
    if not run_dir.is_dir():
        load(run_dir)  # raises, naming what is missing
    with output_directory(run_dir, "diagnose", "keep"):
        return _run_diagnose(run_dir, parts, num_particles, seed, data, t0)


def _run_diagnose(run_dir: Path, parts, num_particles, seed, data, t0) -> dict:
    loaded = load(run_dir)
    metrics = loaded.metrics
    model = metrics.get("model") if isinstance(metrics, dict) else None
    if metrics is None or metrics.get("command") != "fit" or model not in BUILTIN_MODELS:
        raise SavedModelError(f"diagnose: {run_dir} is not a run of pyro-lvm fit (its saved "
                              "metrics name no built-in model); for a model of your own, "
                              "call pyro_lvm.load and the diagnostics in Python")
    ds = _reload_data(loaded.dataset, metrics, model, data, run_dir)
    fit_seed = metrics[model].get("seed", 0)
    seed = fit_seed if seed is None else seed
    result = restore_fit(model, loaded, ds, metrics[model])
    report = Report(f"pyro-lvm fit: {model} on {ds.name}")
    report.add_paragraph(
        f"Diagnostics ({', '.join(parts)}) recomputed by `pyro-lvm diagnose` with "
        f"{num_particles} importance samples and seed {seed} on the saved parameters; the "
        "training numbers are those of the fit." + (
            "" if len(parts) == len(DIAGNOSTICS) else " Diagnostics not chosen are not shown "
            "here; metrics.json keeps their earlier numbers."), note=True)
    settings_table(report, {"model": model, "data": ds.name, "seed of the fit": fit_seed,
                            "seed of the diagnostics": seed,
                            "train / val / test": "{train} / {val} / {test}".format(**ds.sizes)})
    _diagnose(report, model, result, ds, parts, num_particles, seed)
    metrics["versions"] = versions()
    versions_section(report, metrics["versions"])
    metrics.pop("interrupted", None)  # a fit interrupted in its diagnostics: now complete
    metrics["diagnose"] = {"diagnostics": parts, "num_particles": num_particles, "seed": seed,
                           "wall_time_s": time.perf_counter() - t0}
    write_json(metrics, run_dir / "metrics.json")
    update_metrics(run_dir, metrics)
    report.save(run_dir / "report.html")
    return metrics


def _reload_data(record, metrics: dict, model: str, data, run_dir: Path):
    """The data set of a fit run, recreated from its record (and checked against it)."""
    if record is None:
        raise SavedModelError(f"diagnose: {run_dir} records no data set")
    if record.kind == "builtin":
        return record.load()
    where = metrics.get("data_file") or {}
    path = data or where.get("path")
    if path is None:
        raise SavedModelError(f"diagnose: {run_dir} was fitted to data that were not a file; "
                              "pass the data file (--data PATH)")
    ds = datasets.load_file(path, image_shape=where.get("image_shape"),
                            seed=where.get("seed", 0), **BUILTIN_MODELS[model].data_options)
    if not record.matches(ds):
        raise SavedModelError(f"diagnose: {path} is not the data {run_dir} was fitted to (its "
                              "SHA-256 differs): the file changed since the fit; pass the "
                              "original file with --data PATH")
    return ds


def run_demo(out, fast: bool = False, seed: int = 0, progress: bool = True,
             log=print, overwrite: bool = False) -> dict:
    """``pyro-lvm demo``: PPCA (closed form vs SVI vs scikit-learn) and a VAE on the digits.

    Writes ``out/report.html`` and ``out/metrics.json`` and returns the metrics.
    ``fast=True`` uses a few epochs only (for tests; the numbers are then unconverged).
    A directory that already holds a run is refused (:class:`RunExists`) unless
    ``overwrite``. Interrupted (Ctrl-C), it writes the metrics of the parts finished and
    raises :class:`RunInterrupted`.

    Example (about 30 s; ``fast=True``, a few seconds; tests/test_cli.py runs it once, fast,
    and checks its report and metrics)::

        metrics = run_demo("demo-output")

    The settings of both modes are :data:`~pyro_lvm.recipes.DEMO_SETTINGS`:

    >>> [DEMO_SETTINGS[mode]["ppca"]["epochs"] for mode in ("full", "fast")]
    [800, 40]
    """
    with output_directory(out, "demo", "overwrite" if overwrite else "refuse") as out:
        metrics = {"command": "demo", "fast": fast, "seed": seed}
        try:
            return _run_demo(out, fast, seed, progress, log, metrics)
        except KeyboardInterrupt:
            metrics.update({"interrupted": "interrupted before the report was written",
                            "versions": versions()})
            if "ppca" in metrics:
                write_json(metrics, out / "metrics.json")
            raise RunInterrupted(f"{metrics['interrupted']}; {_kept(out)}") from None


def _run_demo(out: Path, fast: bool, seed: int, progress: bool, log, metrics: dict) -> dict:
    """The demo; ``metrics`` collects the numbers as they come (kept if it is interrupted)."""
    settings = DEMO_SETTINGS["fast" if fast else "full"]
    t0 = time.perf_counter()
    torch_threads = torch.get_num_threads()

    log(f"[1/2] PPCA on the 8x8 digits: closed form, SVI ({settings['ppca']['epochs']} "
        f"epochs), scikit-learn")
    ds = datasets.digits(seed=seed)
    metrics["data_sizes"] = ds.sizes
    ppca = fit_ppca(ds, seed=seed, progress=progress, **settings["ppca"])
    pm = metrics["ppca"] = ppca["metrics"]
    log(f"      log p(x) per datapoint, train / test: closed form "
        f"{pm['closed_form']['train_log_lik']:.4f} / {pm['closed_form']['test_log_lik']:.4f}, "
        f"SVI {pm['svi']['train_log_lik']:.4f} / {pm['svi']['test_log_lik']:.4f}, "
        f"sklearn {pm['sklearn']['train_log_lik']:.4f} / {pm['sklearn']['test_log_lik']:.4f}")
    log(f"      gap closed form - SVI: {pm['gap_train']:.4f} nats/datapoint (train)")

    log(f"[2/2] VAE on the statically binarized digits ({settings['vae']['epochs']} epochs)")
    ds_bin = datasets.digits(binarize="static", seed=seed)
    vae = fit_vae(ds_bin, seed=seed, progress=progress, **settings["vae"])
    vm = metrics["vae"] = vae["metrics"]
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
    settings_table(report, {
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
    installed = versions()
    versions_section(report, installed)

    metrics.update({"versions": installed, "torch_threads": torch_threads})
    path = report.save(out / "report.html")
    metrics["wall_time_s"] = time.perf_counter() - t0
    write_json(metrics, out / "metrics.json")
    log(f"Wrote {out / 'metrics.json'}")
    log(f"Report written to {Path(path).resolve()} ({metrics['wall_time_s']:.1f} s)")
    return metrics
