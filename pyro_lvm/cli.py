"""The ``pyro-lvm`` command: parse the arguments, run the job, end with an exit status.

    pyro-lvm fit --model ppca --data digits --epochs 50 --out runs/ppca
    pyro-lvm fit --model vae --data digits --epochs 100 --hidden 128 --out runs/vae
    pyro-lvm diagnose runs/vae --only evidence --particles 5000
    pyro-lvm demo --out demo-output [--fast]

``fit`` writes ``history.json``, ``metrics.json``, ``checkpoint.pt`` and ``report.html`` to the
output directory, which is a saved model (``pyro_lvm.load(DIR)``); ``diagnose`` reloads such a
run and rewrites its report and metrics with the diagnostics chosen; ``demo`` trains a PPCA
(checked against its closed-form maximum-likelihood solution and scikit-learn) and a small VAE
on the 8x8 digits and writes ``report.html`` and ``metrics.json``. The jobs are in
:mod:`pyro_lvm.runs` (``run_fit``, ``run_diagnose``, ``run_demo``).

The output directory is guarded before any training (:func:`pyro_lvm.runs.output_directory`):
one that already holds a run is refused unless ``--overwrite`` (or ``fit --resume``); a second
command writing to the same directory fails at once (a lock file, ``DIR/.pyro-lvm.lock``,
released when its process ends, however it ends); a directory that cannot be written or a
disk with less than 20 MB free is refused.

Exit statuses (:data:`EXIT_CODES`): 0 success; 2 invalid arguments; 3 a file that cannot be
read or written (a missing, corrupt or foreign checkpoint, an unwritable output directory, a
full disk, an output directory that holds a run or is in use); 1 the job itself failed
(training diverged, a model or data error); 130 interrupted (Ctrl-C), after keeping what was
computed (``fit``: the checkpoint of the last epoch, which ``--resume`` continues, and the
history); 143 terminated (SIGTERM, what a batch scheduler or ``kill`` sends), which keeps the
same as Ctrl-C. Errors are one line on stderr naming the problem, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .recipes import BUILTIN_MODELS  # torch-free: the jobs are imported once arguments parse

__all__ = ["EXIT_CODES", "THREAD_VARIABLES", "build_parser", "main", "torch_threads"]

PROG = "pyro-lvm"

#: The exit status of each outcome of ``pyro-lvm``.
EXIT_CODES = {"success": 0, "failed": 1, "invalid arguments": 2, "bad file": 3,
              "interrupted": 130, "terminated": 143}


#: The built-in data sets (the keys of :data:`pyro_lvm.datasets.DATASETS`, which a test keeps
#: equal), spelt out so that ``--help`` does not have to import torch.
BUILTIN_DATA = ("digits", "sprites")
#: File formats ``--data PATH`` reads (:func:`pyro_lvm.datasets.load_file`).
DATA_SUFFIXES = (".npy", ".npz", ".csv", ".pt")
#: What ``diagnose --only`` can choose (:data:`pyro_lvm.runs.DIAGNOSTICS`, which a test keeps
#: equal), spelt out so that ``--help`` does not have to import torch.
DIAGNOSTICS = ("information", "evidence", "bayes-loop")


class UsageError(ValueError):
    """Arguments that argparse accepts one by one but that do not fit together."""


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


def _default(model: str, option: str) -> str:
    value = BUILTIN_MODELS[model].defaults[option]
    return ",".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}" if isinstance(
        value, float) else str(value)


def _image_shape(text: str) -> tuple[int, ...]:
    parts = text.lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(
            f"must be positive sizes separated by x (e.g. 28x28), got {text!r}")
    return shape


def _diagnostics(text: str) -> tuple[str, ...]:
    parts = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in parts if p not in DIAGNOSTICS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(
            f"must be some of {','.join(DIAGNOSTICS)}, comma-separated, got {text!r}")
    return parts


#: The environment variables that set the number of torch threads, first match wins; without
#: them (and without ``--threads``) the command uses one thread: on a machine shared with
#: other work, torch's default of one thread per core made ``make demo`` 16x slower.
THREAD_VARIABLES = ("PYRO_LVM_THREADS", "OMP_NUM_THREADS")


def torch_threads(option: int | None, environ=None) -> int:
    """The number of torch threads to use: ``--threads``, else the first of
    :data:`THREAD_VARIABLES` that holds a positive integer, else 1.

    >>> torch_threads(None, {}), torch_threads(None, {"OMP_NUM_THREADS": "4"}), torch_threads(2, {})
    (1, 4, 2)
    """
    if option is not None:
        return option
    environ = os.environ if environ is None else environ
    for name in THREAD_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyro-lvm`` command. The models, their options and the
    defaults shown in ``--help`` come from :data:`pyro_lvm.recipes.BUILTIN_MODELS`.

    >>> build_parser().parse_args(["demo", "--out", "d", "--fast"]).fast
    True
    """
    def per_model(option: str) -> str:
        return ", ".join(f"{_default(name, option)} for {name}" for name, recipe in
                         BUILTIN_MODELS.items() if option in recipe.defaults)

    parser = argparse.ArgumentParser(
        prog=PROG, description="Fit and diagnose latent-variable models written in Pyro.",
        epilog="exit status: 0 success, 1 the job failed, 2 invalid arguments, 3 a file that "
               "cannot be read or written (an output directory that holds a run, is in use or "
               "is full included), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM; keeps "
               "what Ctrl-C keeps)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p_fit = sub.add_parser(
        "fit", help="train one built-in model and write history, metrics, checkpoint, report",
        description="Train one built-in model; write DIR/history.json, DIR/metrics.json, "
                    "DIR/checkpoint.pt and DIR/report.html.")
    p_fit.add_argument("--model", required=True, choices=tuple(BUILTIN_MODELS),
                       help="; ".join(f"{k}: {m.summary}" for k, m in BUILTIN_MODELS.items()))
    p_fit.add_argument("--data", default="digits", metavar="NAME|PATH",
                       help=f"a built-in data set ({', '.join(BUILTIN_DATA)}; default: digits) "
                            f"or a file of rows ({', '.join(DATA_SUFFIXES)})")
    p_fit.add_argument("--image-shape", type=_image_shape, default=None, metavar="HxW",
                       help="with --data PATH: the rows are images of this shape (e.g. 28x28); "
                            "without it, the report shows no image panels")
    p_fit.add_argument("--epochs", type=_positive_int, default=20, help="default: 20")
    p_fit.add_argument("--out", required=True, metavar="DIR",
                       help="output directory; one that already holds a run is refused unless "
                            "--resume or --overwrite")
    p_fit.add_argument("--latent-dim", type=_positive_int, default=None,
                       help=f"default: {per_model('latent_dim')}")
    p_fit.add_argument("--batch-size", type=_positive_int, default=None,
                       help=f"default: {per_model('batch_size')}")
    p_fit.add_argument("--lr", type=_positive_float, default=None,
                       help=f"Adam learning rate (default: {per_model('lr')})")
    p_fit.add_argument("--seed", type=_nonnegative_int, default=0,
                       help="seed of the data split, binarization, initialization, training "
                            "and the report's samples")
    p_fit.add_argument("--hidden", type=_hidden_sizes, default=None,
                       help="hidden layer sizes, comma-separated (default: "
                            f"{per_model('hidden')})")
    p_fit.add_argument("--resume", action="store_true",
                       help="continue the run in DIR from DIR/checkpoint.pt (written every "
                            "epoch, and kept when a run is interrupted)")
    _overwrite_option(p_fit)
    p_fit.add_argument("--quiet", action="store_true", help="no progress bars")
    _threads_option(p_fit)

    p_diag = sub.add_parser(
        "diagnose", help="reload a fit run and recompute its diagnostics, report and metrics",
        description="Reload the model saved by `pyro-lvm fit --out DIR`, compute the chosen "
                    "diagnostics again on its data, and rewrite DIR/report.html and "
                    "DIR/metrics.json (the parameters are not changed).")
    p_diag.add_argument("run_dir", metavar="DIR", help="a directory written by pyro-lvm fit")
    p_diag.add_argument("--only", type=_diagnostics, default=DIAGNOSTICS, metavar="LIST",
                        help=f"comma-separated, some of {','.join(DIAGNOSTICS)} (default: "
                             "all); the others keep their earlier numbers in metrics.json")
    p_diag.add_argument("--particles", type=_positive_int, default=1000,
                        help="importance samples per test point for log p(x) (default: 1000)")
    p_diag.add_argument("--seed", type=_nonnegative_int, default=None,
                        help="seed of the diagnostics (default: the fit's, which reproduces "
                             "its numbers)")
    p_diag.add_argument("--data", default=None, metavar="PATH",
                        help="the data file of a run fitted to a file, if it has moved (it "
                             "must be the same data)")
    _threads_option(p_diag)

    p_demo = sub.add_parser(
        "demo", help="PPCA and a VAE on the 8x8 digits, with an HTML report",
        description="Train a PPCA (closed form vs SVI vs scikit-learn) and a small VAE on the "
                    "8x8 digits; write DIR/report.html and DIR/metrics.json.")
    p_demo.add_argument("--out", required=True, metavar="DIR",
                        help="output directory; one that already holds a run is refused unless "
                             "--overwrite")
    _overwrite_option(p_demo)
    p_demo.add_argument("--fast", action="store_true",
                        help="a few epochs only (seconds; numbers not converged)")
    p_demo.add_argument("--seed", type=_nonnegative_int, default=0, help="default: 0")
    p_demo.add_argument("--quiet", action="store_true", help="no progress bars")
    _threads_option(p_demo)
    return parser


def _overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in DIR: its files (history, metrics, "
                             "checkpoint, report, saved model) are removed before training")


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="threads of torch and of the BLAS under numpy and scikit-learn "
                             "(default: $PYRO_LVM_THREADS, else $OMP_NUM_THREADS, else 1)")


_FIT_OPTIONS = {"latent_dim": "--latent-dim", "batch_size": "--batch-size", "lr": "--lr",
                "hidden": "--hidden"}


def _fit_options(args: argparse.Namespace) -> dict:
    """The recipe options given on the command line; raises :class:`UsageError` for one the
    model does not have or a combination it cannot fit."""
    recipe = BUILTIN_MODELS[args.model]
    if args.resume and args.overwrite:
        raise UsageError("argument --overwrite: not allowed with --resume (--resume continues "
                         "the run in DIR, --overwrite replaces it)")
    options = {k: getattr(args, k) for k in _FIT_OPTIONS if getattr(args, k) is not None}
    for key in options:
        if key not in recipe.defaults:
            users = [m for m, r in BUILTIN_MODELS.items() if key in r.defaults]
            raise UsageError(f"argument {_FIT_OPTIONS[key]}: only applies to "
                             + " or ".join(f"--model {m}" for m in users))
    latent_dim = options.get("latent_dim", recipe.defaults.get("latent_dim"))
    if recipe.latent_below_data and args.data in BUILTIN_DATA:
        from . import datasets

        data_dim = datasets.DATASETS[args.data]().data_dim
        if latent_dim >= data_dim:
            raise UsageError(f"argument --latent-dim: {args.model} needs latent_dim < "
                             f"{data_dim} (the data dimension), got {latent_dim}")
    return options


def _data_source(args: argparse.Namespace) -> str:
    """``--data`` as a built-in name or an existing file; raises :class:`UsageError` for
    neither (or ``--image-shape`` with a built-in set) and FileNotFoundError for a path that
    does not exist."""
    if args.data in BUILTIN_DATA:
        if args.image_shape is not None:
            raise UsageError("argument --image-shape: only applies to --data PATH (the built-in "
                             "data sets know their image shape)")
        return args.data
    path = Path(args.data)
    if path.is_file():
        return str(path)
    if path.suffix or "/" in args.data or "\\" in args.data:
        raise FileNotFoundError(f"--data {args.data}: no such file")
    raise UsageError(f"argument --data: {args.data!r} is neither a built-in data set "
                     f"({', '.join(BUILTIN_DATA)}) nor a file")


def _summary(metrics: dict, model: str, out: str, headline: str | None = None) -> str:
    """A few lines on what ``fit`` (or ``diagnose``) did and where its files are."""
    m = metrics[model]
    d = m.get("diagnostics", {})
    fitted = m.get("svi", m)
    lines = [f"{model} on {m['data']}: {fitted['epochs']} epochs ({fitted['stop_reason']})"
             + (f"; {headline}" if headline else "")]
    if "closed_form" in m:
        lines.append(f"  train log p(x): SVI {m['svi']['train_log_lik']:.4f}, closed form "
                     f"{m['closed_form']['train_log_lik']:.4f} nats/datapoint")
    else:
        lines.append(f"  test ELBO {m['test_elbo']:.4f} nats/datapoint")
    if "test_log_px" in d:
        lines.append(f"  test log p(x) {d['test_log_px']:.4f} ± {d['test_log_px_se']:.4f} "
                     f"({d['num_particles']} importance samples)")
    if "rate" in d:
        lines.append(f"  rate {d['rate']:.3f}, I {d['mutual_information']:.3f}, "
                     f"KL(q(z)||r(z)) {d['marginal_kl']:.3f} nats/datapoint")
    for label, loop in m.get("bayes_loop", {}).items():
        lines.append(f"  Bayes' loop, {label}: {'passed' if loop['passed'] else 'FAILED'} "
                     f"(p = {loop['p_value']:.2g})")
    files = ", ".join(p.name for p in sorted(Path(out).iterdir())
                      if p.is_file() and not p.name.startswith("."))
    lines.append(f"  files in {Path(out).resolve()}: {files}")
    lines.append(f"Report written to {(Path(out) / 'report.html').resolve()}")
    return "\n".join(lines)


def _message(exc: BaseException) -> str:
    """One line: an OSError as "FILE: what went wrong", anything else as its message."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, RuntimeError):  # torch.save failing outside pyro_lvm's own writes
        text = f"a write failed, is the disk full? ({exc})"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _is_write_failure(exc: BaseException) -> bool:
    from .files import is_write_failure

    return is_write_failure(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyro-lvm`` command with ``argv`` (default ``sys.argv[1:]``); returns the
    exit status (:data:`EXIT_CODES`), with a one-line message on stderr for every failure.
    Ctrl-C (KeyboardInterrupt) ends it with one line too, and status 130; SIGTERM stops it the
    same way (the job keeps what Ctrl-C keeps), with status 143.

    >>> main(["fit", "--model", "ppca", "--epochs", "0", "--out", "x"])
    2
    """
    command = next((a for a in (sys.argv[1:] if argv is None else argv)
                    if not a.startswith("-")), "")
    with _signals_as_interrupt() as received:
        try:
            status = _main(argv)
        except KeyboardInterrupt as exc:  # while parsing or importing, or the job's message
            detail = " ".join(str(exc).split())
            if not detail.startswith("interrupted"):
                detail = "interrupted" + (f": {detail}" if detail else "")
            return _stopped(command, detail, received)
        if received:  # raised where Python discards exceptions (a weakref callback): the job
            #           went on to its end
            return _stopped(command, "interrupted while finishing: the job had completed and "
                                     "its files are written", received)
        return status


def _stopped(command: str, detail: str, received: list[int]) -> int:
    """Print the one line of a stopped command and return its exit status (143 for
    SIGTERM, else 130)."""
    terminated = signal.SIGTERM in received
    if terminated:
        detail = "terminated (SIGTERM)" + detail.removeprefix("interrupted")
    print(f"{PROG}{' ' + command if command else ''}: {detail}", file=sys.stderr)
    return EXIT_CODES["terminated" if terminated else "interrupted"]


@contextlib.contextmanager
def _signals_as_interrupt():
    """While the command runs, SIGINT and SIGTERM raise KeyboardInterrupt (SIGTERM once: a
    second one during the clean-up is ignored, so the checkpoint being written is finished),
    and are recorded in the list it yields: a KeyboardInterrupt that Python discarded (raised
    inside a weakref callback or ``__del__``) still ends the command as interrupted. Outside
    the main thread (signals cannot be set there) it changes nothing."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        again = signum in received
        received.append(signum)
        if signum == signal.SIGINT or not again:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, before in previous.items():
            signal.signal(s, before)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage and message
        return exc.code if isinstance(exc.code, int) else EXIT_CODES["invalid arguments"]

    def fail(outcome: str, exc: BaseException) -> int:
        print(f"{PROG} {args.command}: error: {_message(exc)}", file=sys.stderr)
        return EXIT_CODES[outcome]

    try:
        from .files import check_not_in_use

        # a directory another command writes to fails this one now, not after torch loads
        check_not_in_use(args.run_dir if args.command == "diagnose" else args.out)
        if args.command == "fit":
            options = _fit_options(args)
            data = _data_source(args)
        import torch

        from .infer import CheckpointError, TrainingDivergedError
        from .runs import run_demo, run_diagnose, run_fit

        threads = torch_threads(args.threads)
        torch.set_num_threads(threads)
        # and the BLAS under numpy, SciPy and scikit-learn (their PCA's SVD): one thread per
        # core contends on a shared machine as torch's threads do
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except UsageError as exc:
        return fail("invalid arguments", exc)
    except OSError as exc:
        return fail("bad file", exc)
    try:
        if args.command == "fit":
            extra = {} if args.image_shape is None else {"image_shape": args.image_shape}
            metrics = run_fit(args.model, args.out, data=data, epochs=args.epochs,
                              seed=args.seed, resume=args.resume, overwrite=args.overwrite,
                              progress=not args.quiet, **extra, **options)
            print(_summary(metrics, args.model, args.out))
        elif args.command == "diagnose":
            metrics = run_diagnose(args.run_dir, parts=args.only, num_particles=args.particles,
                                   seed=args.seed, data=args.data)
            print(_summary(metrics, metrics["model"], args.run_dir,
                           f"diagnostics recomputed: {', '.join(args.only)}"))
        else:
            run_demo(args.out, fast=args.fast, seed=args.seed, progress=not args.quiet,
                     overwrite=args.overwrite)
    except UsageError as exc:
        return fail("invalid arguments", exc)
    except (CheckpointError, OSError) as exc:
        return fail("bad file", exc)
    except (ValueError, TrainingDivergedError) as exc:
        return fail("failed", exc)
    except RuntimeError as exc:
        if _is_write_failure(exc):
            return fail("bad file", exc)
        raise
    return EXIT_CODES["success"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
