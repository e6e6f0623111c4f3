"""Tracking callbacks: what they log, with the optional package when it is installed, and the
error that names the extra when it is not."""

import importlib
import math
import subprocess
import sys

import pyro
import pytest
import torch

from pyro_lvm.infer import History, fit
from pyro_lvm.infer.tracking import (
    MLflowCallback,
    TensorBoardCallback,
    epoch_scalars,
    snr_scalars,
)
from pyro_lvm.models import PPCA


class RecordedSNR:
    """What an SNRCallback holds: the epochs it measured at and the SNR per group."""

    def __init__(self, every=2):
        self.every, self.epochs, self.snr = every, [], {"model": [], "guide": []}

    def __call__(self, epoch, history):
        if epoch % self.every == 0:
            self.epochs.append(epoch)
            self.snr["model"].append(10.0 * epoch)
            self.snr["guide"].append(1.0 / epoch)


def _ppca_run(tmp_path, callbacks, epochs=4):
    pyro.clear_param_store()
    torch.manual_seed(0)
    ppca = PPCA(4, 2)
    x = ppca.sample(60)
    return fit(ppca.model, ppca.guide, x[:40], val_data=x[40:], epochs=epochs, batch_size=20,
               callbacks=callbacks, progress=False)


def test_epoch_scalars_follow_the_history():
    h = History(epoch=[1, 2], train_loss=[3.0, 2.5], val_loss=[3.2, 2.9],
                epoch_time=[0.5, 0.4], best_epoch=2)
    assert list(epoch_scalars(2, h)) == [("loss/train", 2.5, 2), ("loss/validation", 2.9, 2),
                                         ("time/epoch_seconds", 0.4, 2), ("best/epoch", 2.0, 2),
                                         ("best/validation_loss", 2.9, 2)]
    no_val = History(epoch=[1], train_loss=[3.0], val_loss=[math.nan], epoch_time=[0.5])
    assert [tag for tag, _, _ in epoch_scalars(1, no_val)] == ["loss/train",
                                                               "time/epoch_seconds"]


def test_snr_scalars_skip_nan_and_start_where_asked():
    snr = RecordedSNR()
    snr.epochs, snr.snr = [2, 4], {"model": [1.0, 2.0], "guide": [math.nan, 0.5]}
    assert list(snr_scalars(snr)) == [("snr/model", 1.0, 2), ("snr/model", 2.0, 4),
                                      ("snr/guide", 0.5, 4)]
    assert list(snr_scalars(snr, start=2)) == []


@pytest.mark.parametrize(("make", "module"), [
    (lambda path: TensorBoardCallback(path), "tensorboard"),
    (lambda path: MLflowCallback(experiment="x", tracking_uri=path.as_uri()), "mlflow"),
], ids=["tensorboard", "mlflow"])
def test_missing_package_names_the_extra(tmp_path, monkeypatch, make, module):
    monkeypatch.setitem(sys.modules, module, None)  # "import module" now raises ImportError
    with pytest.raises(ImportError, match=rf"pip install pyro_lvm\[{module}\]"):
        make(tmp_path)


def test_importing_the_library_imports_no_tracking_package():
    code = ("import sys, pyro_lvm.infer as infer; infer.TensorBoardCallback; "
            "infer.MLflowCallback; "
            "print([m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'mlflow')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_tensorboard_logs_history_and_snr(tmp_path):
    pytest.importorskip("tensorboard")
    event_accumulator = importlib.import_module(
        "tensorboard.backend.event_processing.event_accumulator")
    snr = RecordedSNR()
    with TensorBoardCallback(tmp_path / "tb", snr=snr) as tb:
        history = _ppca_run(tmp_path, [snr, tb])
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)]
               for tag in events.Tags()["scalars"]}
    assert [v for _, v in scalars["loss/train"]] == pytest.approx(history.train_loss)
    assert [v for _, v in scalars["loss/validation"]] == pytest.approx(history.val_loss)
    assert [s for s, _ in scalars["loss/train"]] == history.epoch
    assert scalars["best/epoch"][-1] == (4, history.best_epoch)
    assert scalars["snr/model"] == [(2, 20.0), (4, 40.0)]
    assert [s for s, _ in scalars["snr/guide"]] == [2, 4]


def test_mlflow_logs_history_and_snr(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 deprecates file stores
    uri = (tmp_path / "mlruns").as_uri()
    snr = RecordedSNR()
    with MLflowCallback(experiment="pyro_lvm-test", snr=snr, tracking_uri=uri) as ml:
        history = _ppca_run(tmp_path, [snr, ml])
    client = mlflow.tracking.MlflowClient(uri)
    train = client.get_metric_history(ml.run_id, "loss/train")
    assert [m.value for m in sorted(train, key=lambda m: m.step)] == pytest.approx(
        history.train_loss)
    assert [(m.step, m.value) for m in client.get_metric_history(ml.run_id, "snr/model")] == [
        (2, 20.0), (4, 40.0)]
    run = client.get_run(ml.run_id)
    assert run.data.tags["stop_reason"] == history.stop_reason
    assert run.info.status == "FINISHED"
