"""`pyro-lvm diagnose RUN_DIR`: a fit run reloaded, its diagnostics recomputed, its report and
metrics rewritten; with the fit's seed every number comes back exactly."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pyro_lvm.cli import EXIT_CODES, main
from pyro_lvm.saving import load


def _metrics(run):
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def _without_times(d):
    if isinstance(d, dict):
        return {k: _without_times(v) for k, v in d.items() if not k.endswith("time_s")}
    return d


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("diagnose") / "vae"
    assert main(["fit", "--model", "vae", "--epochs", "2", "--latent-dim", "3", "--hidden", "16",
                 "--seed", "3", "--quiet", "--out", str(run)]) == 0
    return run, _metrics(run)


def test_diagnose_in_a_fresh_process_reproduces_every_number_of_the_fit(vae_run):
    run, fitted = vae_run
    done = subprocess.run([sys.executable, "-m", "pyro_lvm.cli", "diagnose", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "diagnostics recomputed: information, evidence, bayes-loop" in done.stdout
    again = _metrics(run)
    assert again["diagnose"]["seed"] == 3 and again["diagnose"]["num_particles"] == 1000
    for key in ("diagnostics", "bayes_loop"):
        assert _without_times(again["vae"][key]) == _without_times(fitted["vae"][key]), key
    assert again["vae"]["test_elbo"] == fitted["vae"]["test_elbo"]  # training numbers kept
    assert load(run).metrics == again  # saved_model.json holds the same metrics
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "recomputed by `pyro-lvm diagnose`" in html and "aggregate posterior" in html


def test_diagnose_only_the_evidence_with_more_particles(vae_run, capsys):
    run, _ = vae_run
    before = _metrics(run)["vae"]["diagnostics"]
    assert main(["diagnose", str(run), "--only", "evidence", "--particles", "200",
                 "--seed", "7"]) == 0
    assert "diagnostics recomputed: evidence" in capsys.readouterr().out
    after = _metrics(run)
    d = after["vae"]["diagnostics"]
    assert d["num_particles"] == 200 and d["test_log_px"] != before["test_log_px"]
    assert d["rate"] == before["rate"]  # not chosen: the earlier number is kept
    assert after["diagnose"] == {**after["diagnose"], "diagnostics": ["evidence"], "seed": 7}
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "200 importance samples" in html and "aggregate posterior q(z)" not in html
    assert "metrics.json keeps their earlier numbers" in html


def test_diagnose_a_ppca_run_rebuilds_its_closed_form_control(ppca_run, tmp_path):
    run = shutil.copytree(ppca_run[0], tmp_path / "ppca")  # 2 epochs, latent_dim 3 (conftest)
    fitted = _metrics(run)
    assert main(["diagnose", str(run), "--only", "bayes-loop,information"]) == 0
    again = _metrics(run)
    assert _without_times(again["ppca"]["bayes_loop"]) == _without_times(
        fitted["ppca"]["bayes_loop"])
    assert again["ppca"]["diagnostics"] == fitted["ppca"]["diagnostics"] | {
        "time_s": again["ppca"]["diagnostics"]["time_s"]}
    assert again["ppca"]["diagnostics"]["total_correlation"] is not None  # full-cov marginals


def test_diagnose_a_run_on_a_data_file_checks_that_the_file_is_unchanged(tmp_path, capsys):
    rows = np.random.default_rng(0).normal(size=(120, 5)) @ np.random.default_rng(1).normal(
        size=(5, 5))
    data = tmp_path / "rows.csv"
    np.savetxt(data, rows, delimiter=",")
    run = tmp_path / "run"
    assert main(["fit", "--model", "ppca", "--data", str(data), "--latent-dim", "2",
                 "--epochs", "2", "--quiet", "--out", str(run)]) == 0
    assert main(["diagnose", str(run), "--only", "information"]) == 0
    moved = tmp_path / "moved.csv"
    data.rename(moved)
    capsys.readouterr()
    assert main(["diagnose", str(run)]) == EXIT_CODES["bad file"]
    assert "rows.csv" in capsys.readouterr().err
    assert main(["diagnose", str(run), "--data", str(moved), "--only", "evidence"]) == 0
    np.savetxt(data, rows + 1.0, delimiter=",")  # other data under the old name
    assert main(["diagnose", str(run)]) == EXIT_CODES["bad file"]
    err = capsys.readouterr().err
    assert "is not the data" in err and "SHA-256" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, status, words", [
    (["diagnose", "RUN", "--only", "evidence,elbo"], "invalid arguments", "--only"),
    (["diagnose", "RUN", "--particles", "0"], "invalid arguments", "--particles"),
    (["diagnose", "MISSING"], "bad file", "does not exist"),
    (["diagnose", "EMPTY"], "bad file", "holds no saved model"),
])
def test_diagnose_refuses_what_it_cannot_do(tmp_path, capsys, argv, status, words):
    (tmp_path / "EMPTY").mkdir()
    argv = [str(tmp_path / a) if a in ("RUN", "MISSING", "EMPTY") else a for a in argv]
    assert main(argv) == EXIT_CODES[status]
    assert words in capsys.readouterr().err


def test_diagnose_refuses_a_saved_model_that_is_not_a_fit_run(tmp_path, capsys):
    import torch

    from pyro_lvm import save
    from pyro_lvm.models import PPCA

    save(tmp_path, PPCA(4, 2), dataset=torch.zeros(10, 4))
    assert main(["diagnose", str(tmp_path)]) == EXIT_CODES["bad file"]
    assert "is not a run of pyro-lvm fit" in capsys.readouterr().err


def test_the_command_line_names_the_runs_diagnostics():
    from pyro_lvm import cli, runs

    assert cli.DIAGNOSTICS == runs.DIAGNOSTICS
