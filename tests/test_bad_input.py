"""Bad input, table-driven: each case is something a hostile but realistic user does, and the
exact outcome: the error type and the words its message must hold (naming the argument, the
site, the shape or the value, and the remedy where there is one). Issue 17 asked for one
table; the cases of earlier issues' bad-input sections are here too."""

import pickle
import re
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import JitTrace_ELBO, RenyiELBO, Trace_ELBO
from torch.utils.data import DataLoader, Dataset

from pyro_lvm import diagnostics
from pyro_lvm.contract import ModelError
from pyro_lvm.infer import (
    CIWAE,
    IWAE,
    CheckpointError,
    ImportanceWeightedELBO,
    fit,
    load_checkpoint,
    save_checkpoint,
)
from pyro_lvm.models import PPCA, VAE


def _ppca_fit(data=None, **kwargs):
    ppca = PPCA(4, 2)
    data = torch.zeros(10, 4) if data is None else data
    return fit(ppca.model, ppca.guide, data, **{"progress": False, **kwargs})


class _DictRows(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"x": torch.zeros(4)}


class _FailingRows(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            raise OSError("disk read error")
        return torch.zeros(4)


DATA = [  # (id, data, error type, words)
    ("empty", torch.zeros(0, 4), ValueError, "data is empty"),
    ("inf", torch.tensor([[0.0, float("inf"), 0.0, 0.0]]), ValueError,
     r"non-finite value.*\(0, 1\): inf"),
    ("nan", torch.tensor([[0.0, 0.0, float("nan"), 0.0]] * 3), ValueError,
     r"3 non-finite value\(s\).*\(0, 2\): nan"),
    ("scalar", torch.tensor(3.0), ValueError, "scalar"),
    ("meta device", torch.zeros(10, 4, device="meta"), ValueError,
     "'meta' device, which holds shapes but no values"),
    ("wrong feature dimension", torch.zeros(10, 3), ValueError,
     r"\(num_data, 4\), got \(2, 3\)"),
    ("float64 data, float32 model", torch.zeros(10, 4, dtype=torch.float64), ValueError,
     r"the data x are torch.float64 but the parameters are torch.float32"),
    ("strings", [["a", "b", "c", "d"]] * 3, TypeError,
     "data must hold numbers in rows of one shape: its entries are <U1 \\(e.g. 'a'\\)"),
    ("ragged rows", [[0.0, 1.0], [0.0]], TypeError, "data must hold numbers in rows of one shape"),
    ("dict rows", _DictRows(), Exception, "dict"),
    ("a row that fails to read", DataLoader(_FailingRows(), batch_size=2), ValueError,
     r"reading row 2 failed: OSError: disk read error"),
]


@pytest.mark.parametrize("data, error, words", [c[1:] for c in DATA], ids=[c[0] for c in DATA])
def test_bad_data(data, error, words):
    with pytest.raises(error, match=words):
        _ppca_fit(data, batch_size=2)


FIT_ARGUMENTS = [  # (id, keyword arguments of fit, error type, words)
    ("epochs 0", dict(epochs=0), ValueError, "epochs must be a positive integer, got 0"),
    ("epochs 2.5", dict(epochs=2.5), ValueError, "epochs must be a positive integer, got 2.5"),
    ("batch size 0", dict(batch_size=0), ValueError,
     "batch_size must be a positive integer, got 0"),
    ("batch size -4", dict(batch_size=-4), ValueError,
     "batch_size must be a positive integer, got -4"),
    ("patience without validation data", dict(patience=3), ValueError,
     "patience .* needs val_data"),
    ("resume without a checkpoint", dict(resume=True), ValueError,
     "resume=True needs a checkpoint"),
    ("resume 'yes'", dict(resume="yes", checkpoint="c.pt"), ValueError,
     "resume must be True, False or 'override', got 'yes'"),
    ("validation rows of another shape", dict(val_data=torch.zeros(5, 3)), ValueError,
     r"val_data rows have shape \(3,\) but data rows have"),
    ("a torch optimizer class", dict(optimizer=torch.optim.Adam), TypeError,
     "pyro.optim optimizer"),
    ("a loss that is not an ELBO", dict(loss="elbo"), TypeError, "Pyro ELBO"),
    ("a JIT-compiled ELBO", dict(loss=JitTrace_ELBO()), ValueError,
     "compiles the model and guide on their first call"),
    ("RenyiELBO on minibatches", dict(loss=RenyiELBO(), batch_size=5), ValueError,
     "RenyiELBO is biased under minibatches"),
    ("a scheduler with checkpoints", dict(
        optimizer=pyro.optim.ExponentialLR({"optimizer": torch.optim.SGD,
                                            "optim_args": {"lr": 0.01}, "gamma": 0.5}),
        checkpoint="c.pt"), ValueError, "ClippedAdam"),
    ("a checkpoint path that is a directory", dict(checkpoint="."), ValueError,
     "is a directory"),
    ("a checkpoint in a missing directory", dict(checkpoint="missing/c.pt"), ValueError,
     "does not exist"),
]


@pytest.mark.parametrize("kwargs, error, words", [c[1:] for c in FIT_ARGUMENTS],
                         ids=[c[0] for c in FIT_ARGUMENTS])
def test_bad_fit_arguments(kwargs, error, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=words):
        _ppca_fit(**kwargs)


def test_cuda_requested_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        _ppca_fit(device="cuda:0")


OBJECTIVES = [  # (id, constructor, error type, words)
    ("no particles", lambda: IWAE(0), ValueError, "num_particles must be a positive integer"),
    ("beta above 1", lambda: CIWAE(4, beta=1.5), ValueError, r"beta must be a number in \[0, 1\]"),
    ("PIWAE and CIWAE at once", lambda: ImportanceWeightedELBO(4, beta=0.5, partitioned=True),
     ValueError, "cannot be combined"),
    ("an unknown estimator", lambda: IWAE(4, estimator="score"), ValueError,
     "estimator must be one of 'reparam', 'stl', 'dreg'"),
    ("vectorize 'yes'", lambda: IWAE(4, vectorize="yes"), ValueError,
     "vectorize must be True, False or 'auto'"),
]


@pytest.mark.parametrize("make, error, words", [c[1:] for c in OBJECTIVES],
                         ids=[c[0] for c in OBJECTIVES])
def test_bad_objective_arguments(make, error, words):
    with pytest.raises(error, match=words):
        make()


def _checkpoint(tmp_path: Path) -> Path:
    good = tmp_path / "good.pt"
    save_checkpoint({"epoch": 1, "x": torch.randn(1000)}, good)
    return good


def _flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    at = raw.find(load_checkpoint(path)["x"].numpy().tobytes())
    raw[at + 100] ^= 0x01
    path.write_bytes(bytes(raw))


def _newer_version(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({**state, "version": 99, "digest": "x"}, path)


CHECKPOINTS = [  # (id, what is done to a good checkpoint, words)
    ("missing", lambda p: p.unlink(), "does not exist"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
     "cannot be read"),
    ("foreign", lambda p: torch.save({"weights": torch.zeros(3)}, p),
     "is not a pyro_lvm checkpoint"),
    ("a pickled object", lambda p: torch.save({"obj": torch.nn.Linear(2, 2)}, p),
     "cannot be read .*not a safe torch file"),
    ("a malicious pickle", lambda p: p.write_bytes(pickle.dumps(_Payload())),
     "cannot be read"),
    ("garbage", lambda p: p.write_bytes(b"not a checkpoint at all" * 10), "cannot be read"),
    ("a directory", lambda p: (p.unlink(), p.mkdir()), "is not a file"),
    ("a byte changed inside a tensor", _flip_a_byte, "corrupted: its tensors do not match"),
    ("written by a newer version", _newer_version, "version 99"),
]


class _Payload:
    ran = False

    def __reduce__(self):  # unpickling would call this: weights_only must never do it
        return (_Payload._run, ())

    @staticmethod
    def _run():
        _Payload.ran = True


@pytest.mark.parametrize("damage, words", [c[1:] for c in CHECKPOINTS],
                         ids=[c[0] for c in CHECKPOINTS])
def test_bad_checkpoint_files(tmp_path, damage, words):
    path = _checkpoint(tmp_path)
    damage(path)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(path)
    assert not _Payload.ran


def test_bad_model_guide_pairs_are_named_by_site():
    """A few pair faults (the contract tests hold the rest): the call, the site, the remedy."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide_without_z(x):
        pass

    def guide_with_discrete_z(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(0.5))

    x = torch.randn(5)
    with pytest.raises(Exception, match="does not sample the model's latent site 'z'"):
        IWAE(4).loss(model, guide_without_z, x)
    with pytest.raises(Exception, match="'z'.*rsample|reparameteriz"):
        IWAE(4).loss_and_grads(model, guide_with_discrete_z, x)
    vae = VAE(6, 2, hidden=(4,))
    with pytest.raises(ValueError, match=r"observed site 'x' has value 0.5 at index \[0, 0\]"):
        IWAE(2).loss(vae.model, vae.guide, (torch.rand(3, 6) < 0.5).float())  # validated
        IWAE(2).loss(vae.model, vae.guide, torch.full((3, 6), 0.5))  # a later draw
    with pytest.raises(ValueError, match="support"):
        Trace_ELBO().loss(vae.model, vae.guide, torch.full((3, 6), 0.5))


def _diagnostic(name):
    """A call of a diagnostic on a PPCA and its exact posterior, with 40 rows of its data."""
    torch.manual_seed(0)
    ppca = PPCA(4, 2)
    x = ppca.sample(40)
    pair = (ppca.model, ppca.exact_posterior)
    return {
        "bayes_loop": lambda **kw: diagnostics.bayes_loop(*pair, kw.pop("data", x), **kw),
        "information": lambda **kw: diagnostics.information(*pair, kw.pop("data", x), **kw),
        "log_likelihood": lambda **kw: diagnostics.log_likelihood(*pair, kw.pop("data", x),
                                                                  **kw),
        "inference_gaps": lambda **kw: diagnostics.inference_gaps(*pair, kw.pop("data", x),
                                                                  **kw),
        "gradient_snr": lambda **kw: diagnostics.gradient_snr(ppca.model, ppca.guide, x,
                                                              IWAE(2), **kw),
        "prior_gap": lambda **kw: diagnostics.prior_gap(*pair, kw.pop("data", x), **kw),
        "aggregate posterior": lambda **kw: diagnostics.AggregatePosterior.from_guide(
            ppca.exact_posterior, kw.pop("data", x), **kw),
        "energy_test": lambda **kw: diagnostics.energy_test(kw.pop("a", x), kw.pop("b", x), **kw),
    }[name]


DIAGNOSTICS = [  # (id, diagnostic, keyword arguments, error type, words)
    ("bayes_loop on 2 rows", "bayes_loop", dict(data=torch.zeros(2, 4)), ValueError,
     r"bayes_loop needs at least 10 rows of data with num_posterior_samples=99 .*got 2"),
    ("bayes_loop with one posterior draw", "bayes_loop", dict(num_posterior_samples=1),
     ValueError, "num_posterior_samples must be at least 2, got 1"),
    ("bayes_loop at level 1.5", "bayes_loop", dict(level=1.5), ValueError,
     r"level must be in \(0, 1\), got 1.5"),
    ("information on 1 row", "information", dict(data=torch.zeros(1, 4)), ValueError,
     "information needs at least 2 rows of data .*got 1"),
    ("information at 1 point", "information", dict(max_points=1), ValueError,
     "max_points must be at least 2 .*got 1"),
    ("information with an unknown estimator", "information", dict(estimator="exact"),
     ValueError, "estimator must be 'leave_one_out' or 'plug_in', got 'exact'"),
    ("information on NaN data", "information",
     dict(data=torch.tensor([[0.0, float("nan"), 0.0, 0.0]] * 3)), ValueError,
     r"3 non-finite value\(s\).*\(0, 1\): nan"),
    ("log_likelihood with no particles", "log_likelihood", dict(num_particles=0), ValueError,
     "num_particles must be a positive integer, got 0"),
    ("log_likelihood on rows of another width", "log_likelihood",
     dict(data=torch.zeros(5, 3)), ModelError,
     r"log_likelihood: .*x must have shape \(num_data, 4\), got \(5, 3\)"),
    ("inference_gaps with no steps", "inference_gaps", dict(steps=0), ValueError,
     "steps must be a positive integer, got 0"),
    ("gradient_snr from one sample", "gradient_snr", dict(num_samples=1), ValueError,
     "num_samples must be at least 4"),
    ("prior_gap on 1 row", "prior_gap", dict(data=torch.zeros(1, 4)), ValueError,
     "prior_gap needs at least 2 rows of data .*got 1"),
    ("aggregate posterior of no rows", "aggregate posterior", dict(data=torch.zeros(0, 4)),
     ValueError, r"data is empty \(shape \(0, 4\)\)"),
    ("energy_test of 1 draw", "energy_test", dict(a=torch.zeros(1, 2), b=torch.zeros(5, 2)),
     ValueError, "each sample needs at least 2 draws .*got 1 and 5"),
    ("energy_test of samples of other widths", "energy_test",
     dict(a=torch.zeros(4, 2), b=torch.zeros(5, 3)), ValueError,
     r"samples must be \(n, d\) and \(m, d\), got \(4, 2\) and \(5, 3\)"),
]


@pytest.mark.parametrize("name,kwargs,error,words", [c[1:] for c in DIAGNOSTICS],
                         ids=[c[0] for c in DIAGNOSTICS])
def test_bad_diagnostic_input(name, kwargs, error, words):
    with pytest.raises(error, match=words):
        _diagnostic(name)(**kwargs)


NONFINITE_RESULTS = [  # (id, diagnostic, keyword arguments, the result's exact flags)
    ("energy_test with a NaN draw", "energy_test",
     dict(b=torch.tensor([[float("nan")] * 4] + [[0.0] * 4] * 9)),
     lambda r: r.nonfinite == (0, 1) and r.p_value != r.p_value),
    ("energy_test with an infinite draw", "energy_test",
     dict(a=torch.tensor([[float("inf")] * 4] * 2 + [[0.0] * 4] * 8)),
     lambda r: r.nonfinite == (2, 0) and r.statistic != r.statistic),
]


@pytest.mark.parametrize("name,kwargs,flags", [c[1:] for c in NONFINITE_RESULTS],
                         ids=[c[0] for c in NONFINITE_RESULTS])
def test_results_that_are_not_finite_are_flagged(name, kwargs, flags):
    """Draws that are not finite give a result that says so, not a number (the diagnostics
    of a whole pair with a guide that draws inf or nan are in tests/test_faults.py)."""
    assert flags(_diagnostic(name)(**kwargs))


def _cli_cases(tmp: Path):
    """(id, argv, exit status, words on stderr): the command line's bad input."""
    (tmp / "a_file").write_text("x")
    (tmp / "held").mkdir()
    (tmp / "held" / "metrics.json").write_text("{}")
    (tmp / "rows.csv").write_text("1,2\n3,oops\n")
    (tmp / "nan.npy").write_bytes(b"")
    import numpy as np

    np.save(tmp / "nan.npy", np.array([[0.0, float("nan")], [1.0, 2.0]]))
    return [
        ("unknown model", ["fit", "--model", "nope", "--out", str(tmp / "o")], 2,
         "invalid choice: 'nope'"),
        ("epochs 0", ["fit", "--model", "ppca", "--epochs", "0", "--out", str(tmp / "o")], 2,
         "epochs"),
        ("a missing data file", ["fit", "--model", "ppca", "--data", str(tmp / "none.npy"),
                                 "--out", str(tmp / "o")], 3, "none.npy"),
        ("a non-numeric CSV cell", ["fit", "--model", "ppca", "--data", str(tmp / "rows.csv"),
                                    "--out", str(tmp / "o")], 1,
         r"rows.csv: column index 1 is not numeric: .*the first 'oops' on line 2"),
        ("NaN in the data", ["fit", "--model", "ppca", "--data", str(tmp / "nan.npy"),
                             "--out", str(tmp / "o")], 1, r"nan.npy.*(NaN|non-finite)"),
        ("--out is a file", ["demo", "--fast", "--out", str(tmp / "a_file")], 3,
         "is a file, not a directory"),
        ("--out holds a run", ["demo", "--fast", "--out", str(tmp / "held")], 3,
         "already holds a run .*--overwrite"),
        ("--resume and --overwrite", ["fit", "--model", "ppca", "--resume", "--overwrite",
                                      "--out", str(tmp / "o")], 2, "not allowed with"),
        ("diagnose a directory that is not a run", ["diagnose", str(tmp / "held")], 3,
         str(tmp / "held")),
    ]


CLI_IDS = ["unknown model", "epochs 0", "a missing data file", "a non-numeric CSV cell",
           "NaN in the data", "--out is a file", "--out holds a run",
           "--resume and --overwrite", "diagnose a directory that is not a run"]


@pytest.mark.parametrize("case", CLI_IDS)
def test_bad_command_lines(case, tmp_path, capsys):
    from pyro_lvm.cli import main

    argv, status, words = next(c[1:] for c in _cli_cases(tmp_path) if c[0] == case)
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    assert re.search(words, err.splitlines()[-1]), err  # one line (after argparse's usage)
