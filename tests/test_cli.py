"""The ``pyro-lvm`` command and the HTML report."""

import base64
import json
import math
import re
import shutil
import subprocess
import sys

import pytest
import torch

from pyro_lvm.cli import EXIT_CODES, main
from pyro_lvm.infer import History
from pyro_lvm.recipes import BUILTIN_MODELS
from pyro_lvm.report import Report, image_grid, metrics_table

PNG = "data:image/png;base64,"


def _strict_json(path):
    def reject(value):
        raise AssertionError(f"{path} is not strict JSON: it contains {value}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)


def _assert_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<style>" in html
    # no external assets: every src is an embedded image, no stylesheets or scripts to fetch
    assert re.findall(r'src="(?!data:image/png;base64,)', html) == []
    assert "<link" not in html and "<script" not in html
    for payload in re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', html):
        assert base64.b64decode(payload).startswith(b"\x89PNG\r\n\x1a\n")


# -- argument errors ----------------------------------------------------------------------------
FIT = ["fit", "--model", "ppca", "--data", "digits", "--out"]


@pytest.mark.parametrize(
    "extra, name",
    [
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-3"], "--epochs"),
        (["--epochs", "ten"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--latent-dim", "0"], "--latent-dim"),
        (["--latent-dim", "64"], "--latent-dim"),
        (["--lr", "0"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--seed", "-1"], "--seed"),
        (["--hidden", "32"], "--hidden"),  # ppca has no hidden layers
        (["--model", "pca"], "--model"),
        (["--data", "mnist"], "--data"),
    ],
)
def test_fit_bad_argument_exits_2_naming_it(tmp_path, capsys, extra, name):
    code = main([*FIT, str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert name in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "report.html").exists()


@pytest.mark.parametrize(
    "argv, name",
    [
        (["fit", "--model", "vae", "--hidden", "0", "--out", "x"], "--hidden"),
        (["fit", "--model", "vae", "--hidden", "64,a", "--out", "x"], "--hidden"),
        (["fit", "--model", "vae", "--epochs", "2"], "--out"),
        (["fit", "--out", "x"], "--model"),
        (["demo"], "--out"),
        (["train", "--out", "x"], "train"),
        ([], "COMMAND"),
    ],
)
def test_other_bad_arguments(capsys, argv, name):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err


def test_bad_argument_in_a_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pyro_lvm", "fit", "--model", "ppca", "--epochs", "0",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "--epochs" in proc.stderr and "positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


def test_the_command_starts_without_torch():
    """`pyro-lvm --help` must be quick: parsing imports neither torch nor Pyro (measured in
    docs/benchmarks.md; here the cause is checked, not the time)."""
    code = ("import sys; from pyro_lvm.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pyro', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_the_built_in_data_names_are_the_registry():
    from pyro_lvm import datasets
    from pyro_lvm.cli import BUILTIN_DATA

    assert BUILTIN_DATA == tuple(datasets.DATASETS)


def test_fit_help_shows_the_recipes_defaults(capsys):
    """The defaults in --help are the recipes' (one home: the fit_* signatures)."""
    assert main(["fit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    lr = {name: m.defaults["lr"] for name, m in BUILTIN_MODELS.items()}
    assert f"default: {lr['ppca']:g} for ppca, {lr['vae']:g} for vae" in text
    assert "default: 128 for vae)" in text  # hidden sizes: the VAE's only


# -- exit statuses: bad arguments 2, bad files 3, failed jobs 1 ---------------------------------
def test_a_corrupt_checkpoint_exits_3_naming_the_file(tmp_path, capsys):
    """Regression: every ValueError, a bad checkpoint included, exited 2 ("invalid
    arguments")."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code = main([*FIT, str(out), "--epochs", "1", "--latent-dim", "2", "--quiet", "--resume"])
    err = capsys.readouterr().err
    assert code == EXIT_CODES["bad file"] == 3
    assert "checkpoint.pt" in err and "Traceback" not in err


def test_an_output_path_that_is_a_file_exits_3(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a directory")
    assert main(["demo", "--out", str(blocker), "--fast", "--quiet"]) == 3
    assert "taken" in capsys.readouterr().err


def test_a_diverging_fit_exits_1(tmp_path, capsys):
    code = main([*FIT, str(tmp_path / "run"), "--epochs", "3", "--latent-dim", "2",
                 "--lr", "1e30", "--quiet"])
    err = capsys.readouterr().err
    assert code == EXIT_CODES["failed"] == 1
    assert "step" in err and "Traceback" not in err


# -- the output directory: runs kept, locked, checked before training (issue 17) -----------------
PPCA1 = [*FIT[:-1], "--latent-dim", "2", "--epochs", "1", "--quiet", "--out"]


def _one_line_error(err: str, *words: str) -> None:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def _no_training(monkeypatch):
    """The runs fail if they get as far as loading data: the command must stop before."""
    from pyro_lvm import runs

    class Refuse:
        def __getattr__(self, name):
            raise AssertionError("data loaded although the output directory was refused")

    monkeypatch.setattr(runs, "datasets", Refuse())


def test_a_directory_holding_a_run_is_refused_unless_overwrite(ppca_run, tmp_path, capsys):
    """Regression: --out holding a run was overwritten silently, and two runs mixed their
    files (a PPCA's metrics and report with a VAE's checkpoint)."""
    out = shutil.copytree(ppca_run[0], tmp_path / "run")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for argv in (["fit", "--model", "vae", "--epochs", "1", "--quiet", "--out", str(out)],
                 [*PPCA1, str(out)], ["demo", "--fast", "--quiet", "--out", str(out)]):
        assert main(argv) == EXIT_CODES["bad file"]
        _one_line_error(capsys.readouterr().err, str(out), "already holds a run", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    assert main([*PPCA1, str(out), "--resume", "--overwrite"]) == 2
    _one_line_error(capsys.readouterr().err, "--overwrite", "--resume")
    # --overwrite replaces the run: the earlier run's files are gone, none is mixed in
    (out / "report.html").unlink()
    assert main([*PPCA1, str(out), "--overwrite"]) == 0
    assert _strict_json(out / "history.json")["epoch"] == [1]
    assert (out / "report.html").is_file() and not (out / ".pyro-lvm.lock").exists()
    assert main(["fit", "--help"]) == 0
    assert "--overwrite" in capsys.readouterr().out


def test_a_second_command_into_a_directory_in_use_fails_at_once(tmp_path, capsys,
                                                                 monkeypatch):
    from pyro_lvm.files import directory_lock

    _no_training(monkeypatch)
    with directory_lock(tmp_path, "fit"):
        assert main(["demo", "--fast", "--quiet", "--out", str(tmp_path)]) == 3
        _one_line_error(capsys.readouterr().err, str(tmp_path), "in use by `pyro-lvm fit`")
        assert main(["diagnose", str(tmp_path)]) == 3  # diagnose takes the lock as well
        assert "in use by" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # the lock file is removed on exit, errors included


def test_a_directory_in_use_fails_the_second_command_before_torch_loads(tmp_path):
    """Before: the second command took the lock after importing torch, 9-13 s on a busy
    machine, so it did not fail "at once"."""
    from pyro_lvm.files import directory_lock

    probe = ("import sys; from pyro_lvm.cli import main; "
             f"code = main(['fit', '--model', 'ppca', '--quiet', '--out', {str(tmp_path)!r}]); "
             "print(code, 'torch' in sys.modules)")
    with directory_lock(tmp_path, "fit"):
        run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=120)
    assert run.stdout.split() == ["3", "False"], run.stdout + run.stderr
    _one_line_error(run.stderr, str(tmp_path), "in use by `pyro-lvm fit`")


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    """The lock is an flock, released by the operating system when its process ends: the
    file a killed process leaves behind is taken over, not obeyed."""
    import signal

    from pyro_lvm.files import LOCK_NAME, DirectoryInUse, directory_lock

    code = ("import sys, time; from pyro_lvm.files import directory_lock; "
            "lock = directory_lock(sys.argv[1], 'fit'); lock.__enter__(); "
            "print('locked', flush=True); "
            "time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryInUse, match=f"process {proc.pid} on"):
            with directory_lock(tmp_path, "demo"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert (tmp_path / LOCK_NAME).exists()  # left behind by the killed process ...
    with directory_lock(tmp_path, "demo"):  # ... and taken over at once
        pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_an_unwritable_or_full_directory_is_refused_before_training(tmp_path, capsys,
                                                                    monkeypatch):
    """Regression: demo on a read-only --out trained for two minutes, then failed writing
    the report. (Permissions are simulated: the tests may run as root.)"""
    import collections
    import errno
    import os

    from pyro_lvm import files

    _no_training(monkeypatch)
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(files.LOCK_NAME):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "open", read_only)
        assert main(["demo", "--fast", "--quiet", "--out", str(tmp_path / "ro")]) == 3
    _one_line_error(capsys.readouterr().err, str(tmp_path / "ro"), "cannot write there",
                    "Permission denied")

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 10**6))
    assert main([*PPCA1, str(tmp_path / "full")]) == 3
    _one_line_error(capsys.readouterr().err, str(tmp_path / "full"), "MB free")
    assert list((tmp_path / "full").iterdir()) == []


@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1088 vs 1000"),
])
def test_a_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, failure):
    """Regression: a full disk ended in torch's "[enforce fail at inline_container.cc:672]
    unexpected pos ..." and a traceback."""
    def full(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "run"
    assert main([*PPCA1, str(out)]) == EXIT_CODES["bad file"]
    _one_line_error(capsys.readouterr().err, str(out / "checkpoint.pt"))
    assert sorted(p.name for p in out.iterdir()) == []  # no temporary file, no lock left


def _signal_after_first_checkpoint(argv: list, out, signum) -> tuple[int, str]:
    """Run the command ``argv`` (which writes ``out``), send it ``signum`` once its first
    checkpoint is on disk, and return its exit status and stderr."""
    import time

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_ctrl_c_in_a_fit_keeps_the_checkpoint_and_history_and_resumes(tmp_path):
    """Regression: Ctrl-C printed a 30-line traceback and left no history, metrics or report.
    Now: one line, exit 130, the checkpoint of the last epoch and the history kept, and
    --resume finishes the run."""
    import signal

    out = tmp_path / "vae"
    argv = [sys.executable, "-m", "pyro_lvm", "fit", "--model", "vae", "--hidden", "16",
            "--latent-dim", "2", "--quiet", "--out", str(out)]
    status, err = _signal_after_first_checkpoint([*argv, "--epochs", "10000"], out,
                                                 signal.SIGINT)
    assert status == EXIT_CODES["interrupted"] == 130
    _one_line_error(err, "pyro-lvm fit: interrupted in epoch", "checkpoint.pt", "history.json",
                    "--resume continues from checkpoint.pt")
    history = _strict_json(out / "history.json")
    metrics = _strict_json(out / "metrics.json")
    assert metrics["interrupted"].startswith("interrupted in epoch")
    assert not (out / "report.html").exists() and not (out / ".pyro-lvm.lock").exists()
    # a fit without --resume would replace the run: refused
    refused = subprocess.run([*argv, "--epochs", "1"], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 3 and "--resume" in refused.stderr
    done = len(history["epoch"]) + 1
    finished = subprocess.run([*argv, "--epochs", str(done), "--resume"], capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    resumed = _strict_json(out / "history.json")
    assert resumed["epoch"] == list(range(1, done + 1))
    assert resumed["train_loss"][:done - 1] == history["train_loss"][:done - 1]
    assert "interrupted" not in _strict_json(out / "metrics.json")
    assert (out / "report.html").is_file()


def test_sigterm_in_a_fit_keeps_the_checkpoint_like_ctrl_c(tmp_path):
    """Before: SIGTERM (a batch scheduler's stop) killed the run with Python's default action:
    no history, no message. Now: what Ctrl-C keeps, one line, exit 143."""
    import signal

    from pyro_lvm.infer import load_checkpoint

    out = tmp_path / "ppca"
    status, err = _signal_after_first_checkpoint(
        [sys.executable, "-m", "pyro_lvm", *PPCA1[:-1], "--epochs", "100000", "--out",
         str(out)], out, signal.SIGTERM)
    assert status == EXIT_CODES["terminated"] == 143, err
    _one_line_error(err, "pyro-lvm fit: terminated (SIGTERM) in epoch", "checkpoint.pt",
                    "--resume continues from checkpoint.pt")
    assert _strict_json(out / "metrics.json")["interrupted"].startswith("interrupted in epoch")
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] >= 1
    assert not (out / ".pyro-lvm.lock").exists()


def test_a_ctrl_c_that_python_discarded_still_ends_as_interrupted(tmp_path, capsys,
                                                                 monkeypatch):
    """Before: a SIGINT that landed in a weakref callback was printed as "Exception ignored"
    and the command went on and exited 0. Now it ends with one line and 130 (its files are
    complete)."""
    import signal

    from pyro_lvm import runs

    versions_section = runs.versions_section  # called after training and the diagnostics

    def swallowed(*args, **kwargs):
        try:  # what Python does with an exception raised inside a weakref callback
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        return versions_section(*args, **kwargs)

    monkeypatch.setattr(runs, "versions_section", swallowed)
    out = tmp_path / "ppca"
    assert main([*PPCA1, str(out)]) == 130
    _one_line_error(capsys.readouterr().err, "pyro-lvm fit: interrupted while finishing")
    assert (out / "report.html").is_file() and "interrupted" not in _strict_json(
        out / "metrics.json")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_an_interrupted_resume_keeps_the_finished_runs_metrics(tmp_path, capsys, monkeypatch):
    from pyro_lvm import runs

    out = tmp_path / "ppca"
    assert main([*PPCA1, str(out)]) == 0
    finished = _strict_json(out / "metrics.json")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "_diagnose", interrupted)
    assert main([*PPCA1[:-1], "--epochs", "3", "--resume", "--out", str(out)]) == 130
    capsys.readouterr()
    kept = _strict_json(out / "metrics.json")
    assert kept["interrupted"] == "interrupted after training, in the diagnostics"
    assert kept["previous"] == finished


def test_ctrl_c_after_training_saves_the_model_for_diagnose(tmp_path, capsys, monkeypatch):
    from pyro_lvm import runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "ppca"
    with monkeypatch.context() as m:
        m.setattr(runs, "_diagnose", interrupted)
        assert main([*PPCA1, str(out)]) == 130
    _one_line_error(capsys.readouterr().err, "interrupted after training", "params.pt",
                    "pyro-lvm diagnose")
    assert {"history.json", "metrics.json", "checkpoint.pt", "params.pt",
            "saved_model.json"} <= {p.name for p in out.iterdir()}
    assert main(["diagnose", str(out), "--only", "information"]) == 0
    assert (out / "report.html").is_file()
    assert "interrupted" not in _strict_json(out / "metrics.json")


def test_ctrl_c_in_the_demo_keeps_the_finished_part(tmp_path, capsys, monkeypatch):
    from pyro_lvm import runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "fit_vae", interrupted)
    assert main(["demo", "--fast", "--quiet", "--out", str(tmp_path)]) == 130
    _one_line_error(capsys.readouterr().err, "pyro-lvm demo: interrupted", "metrics.json")
    m = _strict_json(tmp_path / "metrics.json")
    assert "ppca" in m and "vae" not in m and m["interrupted"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_ctrl_c_while_starting_is_one_line(capsys, monkeypatch):
    from pyro_lvm import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_fit_options", interrupted)
    assert main([*PPCA1, "x"]) == 130
    assert capsys.readouterr().err.strip() == "pyro-lvm fit: interrupted"


# -- demo ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--fast", "--quiet"]) == 0
    return out


def test_demo_writes_a_self_contained_report(demo_dir):
    html = (demo_dir / "report.html").read_text(encoding="utf-8")
    _assert_self_contained(html)
    # PPCA curve + reconstructions; VAE curve, recon., samples; q(z) vs p(z), KL, evidence
    assert html.count(PNG) >= 9  # ... and the Bayes' loop rank histograms
    for words in ("Probabilistic PCA", "VAE", "sklearn", "closed-form", "aggregate posterior",
                  "k-hat", "Bayes&#x27; loop", "Versions"):
        assert words in html
    # --fast trains a few epochs: the page warns, next to the training curves
    assert html.count("Training has not converged") == 2
    # times to 0.1 s, p-values never in 4 significant digits of scientific notation
    assert re.search(r"<td>training time \(s\)</td><td class=\"num\">\d+\.\d</td>", html)
    assert not re.search(r"\d\.\d{3}e-\d", html)


def test_demo_metrics(demo_dir):
    m = _strict_json(demo_dir / "metrics.json")
    assert m["command"] == "demo" and m["fast"] is True
    assert m["wall_time_s"] > 0 and {"torch", "pyro-ppl", "numpy"} <= set(m["versions"])
    p = m["ppca"]
    cf, svi, sk = p["closed_form"], p["svi"], p["sklearn"]
    # the closed form is the maximum of the training log-likelihood
    assert cf["train_log_lik"] >= svi["train_log_lik"]
    assert cf["train_log_lik"] >= sk["train_log_lik"]
    assert math.isclose(p["gap_train"], cf["train_log_lik"] - svi["train_log_lik"])
    # scikit-learn's PPCA (1/(N-1) covariance) agrees with the closed form to ~1e-3
    assert abs(cf["train_log_lik"] - sk["train_log_lik"]) < 1e-3
    assert abs(cf["test_log_lik"] - sk["test_log_lik"]) < 1e-2
    assert cf["noise_variance"] > 0 and svi["num_steps"] > 0
    v = m["vae"]
    assert math.isfinite(v["test_elbo"]) and v["test_elbo"] < 0
    assert v["epochs"] >= 1 and math.isfinite(v["baseline_test_log_lik"])
    d = v["diagnostics"]
    assert math.isclose(d["rate"], d["mutual_information"] + d["marginal_kl"], abs_tol=1e-5)
    assert 0 < d["mutual_information"] <= d["mutual_information_ceiling"]
    # importance sampling tightens the ELBO (up to Monte Carlo error)
    assert d["test_log_px"] > v["test_elbo"] - 3 * d["test_log_px_se"]
    assert 0 <= d["khat_flagged_fraction"] <= 1 and d["active_units"] <= 8
    loops = v["bayes_loop"]
    assert loops["PPCA (closed form, exact posterior)"]["passed"] is True
    assert set(loops["VAE (its encoder)"]) >= {"passed", "p_value", "variance_ratio"}


# -- fit ----------------------------------------------------------------------------------------
def test_fit_ppca_writes_its_files_and_resumes(ppca_run, tmp_path):
    """The run of conftest.py's ``ppca_run`` (``fit --model ppca --data digits --latent-dim 3
    --batch-size 256 --lr 0.02 --epochs 2``), then ``--resume`` on a copy of it."""
    fitted, printed = ppca_run
    assert str(fitted / "report.html") in printed
    out = shutil.copytree(fitted, tmp_path / "ppca")
    argv = ["fit", "--model", "ppca", "--data", "digits", "--latent-dim", "3",
            "--batch-size", "256", "--lr", "0.02", "--quiet", "--out", str(out)]
    for name in ("history.json", "metrics.json", "checkpoint.pt", "report.html"):
        assert (out / name).is_file(), name
    history = _strict_json(out / "history.json")
    assert history["epoch"] == [1, 2] and len(history["train_loss"]) == 2
    m = _strict_json(out / "metrics.json")
    assert m["model"] == "ppca" and m["ppca"]["latent_dim"] == 3
    assert m["ppca"]["closed_form"]["train_log_lik"] >= m["ppca"]["svi"]["train_log_lik"]
    html = (out / "report.html").read_text(encoding="utf-8")
    _assert_self_contained(html)
    # the same sections as the demo's: Bayes' loop (with the exact posterior as its control)
    # and versions; 2 epochs cannot be trusted, and the page says so next to the curve
    for words in ("Bayes&#x27; loop", "PPCA (closed form, exact posterior)", "Versions",
                  "<td>pyro-ppl</td>", '<div class="warning"', "Training has not converged"):
        assert words in html, words
    assert m["ppca"]["bayes_loop"]["PPCA (closed form, exact posterior)"]["passed"] is True

    # --resume continues from the checkpoint up to the new number of epochs
    assert main([*argv, "--epochs", "3", "--resume"]) == 0
    resumed = _strict_json(out / "history.json")
    assert resumed["epoch"] == [1, 2, 3]
    assert resumed["train_loss"][:2] == history["train_loss"]


def test_fit_vae_writes_its_files(tmp_path, monkeypatch):
    """... and its report's prior samples are drawn with --seed, leaving the global random
    state alone (regression: they were always drawn with seed 0, by reseeding the global
    RNG)."""
    from pyro_lvm.models import VAE

    seeds = []
    sample = VAE.sample

    def recording_sample(self, *args, **kwargs):
        seeds.append(torch.initial_seed())
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(VAE, "sample", recording_sample)
    out = tmp_path / "vae"
    assert main(["fit", "--model", "vae", "--epochs", "1", "--latent-dim", "2", "--seed", "5",
                 "--hidden", "16,8", "--quiet", "--out", str(out)]) == 0
    assert seeds == [5]
    for name in ("history.json", "metrics.json", "checkpoint.pt", "report.html"):
        assert (out / name).is_file(), name
    m = _strict_json(out / "metrics.json")
    assert m["vae"]["hidden"] == [16, 8] and math.isfinite(m["vae"]["test_elbo"])


def test_the_vae_section_leaves_the_global_random_state_alone(small_vae):
    from pyro_lvm.report_sections import vae_section

    result, ds = small_vae  # fitted with seed 3
    state = torch.get_rng_state()
    pages = []
    for seed in (None, 3, 4):
        rep = Report("t")
        vae_section(rep, result, ds, seed=seed)
        pages.append(rep.render())
        assert torch.equal(torch.get_rng_state(), state)
    samples = [re.findall(r'data:image/png;base64,[^"]+', page)[-1] for page in pages]
    assert samples[0] == samples[1] != samples[2]  # default: the recipe's own seed


# -- report helpers -----------------------------------------------------------------------------
def test_report_helpers():
    rep = Report("a <title>")
    rep.add_table({"x & y": 1.5, "n": 3, "nan": float("nan")})
    rep.add_figure(image_grid([torch.rand(3, 64), torch.rand(2, 64)], (8, 8),
                              row_labels=["a", "b"]), caption="grid")
    rep.add_figure(History(epoch=[1, 2], train_loss=[2.0, 1.0], val_loss=[math.nan, math.nan],
                           epoch_time=[0.1, 0.1]).plot())
    html = rep.render()
    _assert_self_contained(html)
    assert "<title>a &lt;title&gt;</title>" in html and "x &amp; y" in html
    assert html.count(PNG) == 2
    with pytest.raises(ValueError, match="2 row labels for 1 rows"):
        image_grid([torch.rand(2, 4)], (2, 2), row_labels=["a", "b"])
    with pytest.raises(ValueError, match="3 cells, expected 2"):
        metrics_table([(1, 2, 3)])


def test_the_command_uses_one_torch_thread_unless_told(monkeypatch, tmp_path, capsys):
    """torch's default of one thread per core made `make demo` 16x slower on a shared
    machine (issue 16): one thread, unless --threads or the environment says otherwise."""
    from pyro_lvm.cli import torch_threads

    assert torch_threads(None, {}) == 1
    assert torch_threads(None, {"OMP_NUM_THREADS": "3"}) == 3
    assert torch_threads(None, {"PYRO_LVM_THREADS": "2", "OMP_NUM_THREADS": "3"}) == 2
    assert torch_threads(None, {"OMP_NUM_THREADS": "many"}) == 1
    assert torch_threads(4, {"OMP_NUM_THREADS": "3"}) == 4
    monkeypatch.delenv("PYRO_LVM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert main(["diagnose", str(tmp_path / "missing"), "--threads", "2"]) == 3
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert main(["fit", "--help"]) == 0
    assert "--threads" in capsys.readouterr().out
