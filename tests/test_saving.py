"""pyro_lvm.saving: a fitted model saved, reloaded in a fresh process, and reported the same."""

import json
import pickle
import subprocess
import sys
import textwrap

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_lvm import datasets
from pyro_lvm.diagnostics import information, log_likelihood
from pyro_lvm.guides import AmortizedNormal, PerDatapointNormal
from pyro_lvm.infer import CheckpointError, History, fit
from pyro_lvm.models import PPCA, VAE, GaussianToy, SparseCoding, TwoLayerVAE
from pyro_lvm.saving import MANIFEST, PARAMS, DataRecord, SavedModelError, load, save

SPEC = {"name": "digits", "seed": 0, "binarize": "static"}


def diagnostics(model, guide, train, test) -> dict:
    """The numbers the fresh process must reproduce exactly (fixed seeds)."""
    info = information(model, guide, train, seed=0)
    evidence = log_likelihood(model, guide, test, num_particles=20, seed=0)
    return {"rate": float(info.rate), "distortion": float(info.distortion),
            "mutual_information": float(info.mutual_information),
            "marginal_kl": float(info.marginal_kl), "active_units": info.active_units,
            "log_px": evidence.log_px.tolist()}


RELOAD = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    from pyro_lvm.saving import load
    sys.path.insert(0, {tests!r})
    from test_saving import diagnostics

    out = {{}}
    for name, dtype in (("vae", torch.float32), ("ppca", torch.float64)):
        loaded = load({root!r} + "/" + name)
        ds = loaded.dataset.load()
        train, test = ds.train[:150].to(dtype), ds.test[:10].to(dtype)
        out[name] = {{"metrics": diagnostics(loaded.model, loaded.guide, train, test),
                     "epochs": loaded.history.epoch,
                     "objects": {{k: type(v).__name__ for k, v in loaded.objects.items()}}}}
    print(json.dumps(out))
""")


def test_fitted_vae_and_ppca_reload_in_a_fresh_process_with_the_same_diagnostics(tmp_path):
    ds = datasets.digits(**{k: v for k, v in SPEC.items() if k != "name"})
    train, val, test = ds.train[:150], ds.val[:50], ds.test[:10]

    vae = VAE(64, 2, hidden=(8,))
    guide = AmortizedNormal(vae.model, hidden=(8,))
    h = fit(vae.model, guide, train, val_data=val, epochs=2, batch_size=50, progress=False,
            optimizer=pyro.optim.Adam({"lr": 0.01}))
    save(tmp_path / "vae", vae, guide, dataset=SPEC, history=h,
         metrics=diagnostics(vae.model, guide, train, test))

    ppca = PPCA(64, 2).double()
    h = fit(ppca.model, ppca.guide, train.double(), epochs=2, batch_size=50, progress=False,
            optimizer=pyro.optim.Adam({"lr": 0.01}))
    save(tmp_path / "ppca", ppca.model, dataset=SPEC, history=h,
         metrics=diagnostics(ppca.model, ppca.guide, train.double(), test.double()))

    script = tmp_path / "reload.py"
    script.write_text(RELOAD.format(tests=str(__import__("pathlib").Path(__file__).parent),
                                    root=str(tmp_path)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for name in ("vae", "ppca"):
        saved = json.loads((tmp_path / name / MANIFEST).read_text())
        assert out[name]["metrics"] == saved["metrics"], name
        assert out[name]["epochs"] == [1, 2]
    assert out["vae"]["objects"] == {"model": "VAE", "guide": "AmortizedNormal"}
    assert out["ppca"]["objects"] == {"model": "PPCA"}


def test_history_with_nan_validation_loss_and_the_dataset_record_round_trip(tmp_path):
    vae = VAE(64, 2, hidden=(4,))
    h = History(epoch=[1], train_loss=[3.0], val_loss=[float("nan")], epoch_time=[0.1])
    loaded = load(save(tmp_path, vae, dataset=SPEC, history=h, metrics={"a": 1.5}))
    assert loaded.history.epoch == [1] and loaded.history.val_loss[0] != loaded.history.val_loss[0]
    assert loaded.metrics == {"a": 1.5}
    assert loaded.dataset.kind == "builtin" and loaded.dataset.options == {
        "seed": 0, "binarize": "static"}
    assert loaded.dataset.matches(datasets.digits(binarize="static", seed=0))
    assert not loaded.dataset.matches(datasets.digits(binarize="static", seed=1))


@pytest.mark.parametrize("build", [
    lambda: (TwoLayerVAE(6, (3, 2), ((5,), (4,)), likelihood="gaussian"), None),
    lambda: (SparseCoding(6, 8, alpha=0.8, noise_scale="learned"), "amortized"),
    lambda: (GaussianToy(4), None),
    lambda: (VAE(6, 2, hidden=(5,), prior={"name": "vamp", "num_components": 3}), None),
    lambda: (VAE(6, 2, hidden=(5,), likelihood="gaussian_learned", prior="mixture"), None),
    lambda: (VAE(6, 2, hidden=(5,), prior="flow"), "per_datapoint"),
])
def test_every_builtin_is_rebuilt_with_its_settings_and_parameters(tmp_path, build):
    obj, kind = build()
    model = obj.model
    guide = {None: None, "per_datapoint": lambda: PerDatapointNormal(model, num_data=7),
             "amortized": lambda: AmortizedNormal(model, hidden=(3,))}[kind]
    guide = guide() if guide else None
    x = torch.randn(7, 6 if not isinstance(obj, GaussianToy) else 4)
    with torch.no_grad():  # move every parameter away from its initial value
        for p in obj.parameters():
            p.add_(torch.randn(p.shape))
    if guide is not None:
        guide(x)
        with torch.no_grad():
            for p in guide.parameters():
                p.normal_()
    save(tmp_path, model, guide)
    pyro.clear_param_store()
    loaded = load(tmp_path)
    rebuilt = loaded.objects["model"]
    assert type(rebuilt) is type(obj) and rebuilt.config == obj.config
    for (name, a), (_, b) in zip(obj.state_dict().items(), rebuilt.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    if guide is not None:
        assert loaded.objects["guide"].config == guide.config
        for (name, a), (_, b) in zip(guide.state_dict().items(),
                                     loaded.objects["guide"].state_dict().items(), strict=True):
            assert torch.equal(a, b), name
    owned = {id(p) for o in loaded.objects.values() for p in o.parameters()}
    store = dict(pyro.get_param_store().named_parameters())
    assert store and all(id(p) in owned for p in store.values())  # the loaded tensors


def model_fn(x):
    w = pyro.param("w", torch.ones(3))
    s = pyro.param("s", torch.ones(()), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z[:, None] * w, s).to_event(1), obs=x)


def guide_fn(x):
    a = pyro.param("a", torch.zeros(3))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x @ a, 1.0))


def test_user_function_pair_round_trip_and_mismatch_names_parameters_and_shapes(tmp_path):
    x = torch.randn(40, 3)
    fit(model_fn, guide_fn, x, epochs=2, batch_size=20, progress=False,
        optimizer=pyro.optim.Adam({"lr": 0.1}))
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    save(tmp_path, model_fn, guide_fn, dataset=x)
    pyro.clear_param_store()
    state = torch.random.get_rng_state()
    loaded = load(tmp_path, model=model_fn, guide=guide_fn)
    assert torch.equal(torch.random.get_rng_state(), state)  # the trial run drew nothing
    assert loaded.dataset.kind == "array" and loaded.dataset.matches(x)
    after = dict(pyro.get_param_store().items())
    assert sorted(after) == sorted(before)
    for name in before:
        assert torch.equal(after[name], before[name]), name

    with pytest.raises(SavedModelError, match="model"):
        load(tmp_path)  # functions cannot be rebuilt: model= is needed

    def other_model(x):
        pyro.param("w", torch.ones(4))            # shape differs
        pyro.param("b", torch.ones(2))            # missing from the file
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z[:, None], 1.0).to_event(1), obs=x)

    pyro.clear_param_store()
    with pytest.raises(SavedModelError) as e:
        load(tmp_path, model=other_model, guide=guide_fn)
    message = str(e.value)
    assert "missing from the file (declared by the model/guide): 'b'" in message
    assert "extra in the file (not declared by the model/guide): 's'" in message
    assert "'w' saved (3,), declared (4,)" in message
    assert str(tmp_path / PARAMS) in message


class BNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))

    def forward(self, x):
        pyro.module("bn_model", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.net(z), 1.0).to_event(1), obs=x)


class BNGuide(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))

    def forward(self, x):
        pyro.module("bn_guide", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.net(x), 1.0).to_event(1))


def test_batchnorm_buffers_survive_the_round_trip(tmp_path):
    model, guide = BNModel(), BNGuide()
    fit(model, guide, torch.randn(60, 3) + 2.0, epochs=2, batch_size=20, progress=False)
    stats = {k: v.clone() for k, v in guide.state_dict().items() if "running" in k}
    assert not torch.equal(stats["net.1.running_mean"], torch.zeros(4))
    save(tmp_path, model, guide, dataset=torch.randn(60, 3))
    pyro.clear_param_store()
    fresh_model, fresh_guide = BNModel(), BNGuide()
    loaded = load(tmp_path, model=fresh_model, guide=fresh_guide)
    assert loaded.objects == {"model": fresh_model, "guide": fresh_guide}
    for k, v in stats.items():
        assert torch.equal(fresh_guide.state_dict()[k], v), k
    assert int(fresh_guide.net[1].num_batches_tracked) == int(guide.net[1].num_batches_tracked)
    for (k, a), b in zip(model.state_dict().items(), fresh_model.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k


def test_a_fit_checkpoint_loads_with_the_users_pair(tmp_path):
    x = torch.randn(30, 3)
    fit(model_fn, guide_fn, x, epochs=2, batch_size=10, progress=False,
        checkpoint=tmp_path / "checkpoint.pt", optimizer=pyro.optim.Adam({"lr": 0.1}))
    want = pyro.param("w").detach().clone()
    pyro.clear_param_store()
    with pytest.raises(SavedModelError, match="pass model= and guide="):
        load(tmp_path)
    with pytest.raises(SavedModelError, match="pass data="):
        load(tmp_path, model=model_fn, guide=guide_fn)
    loaded = load(tmp_path, model=model_fn, guide=guide_fn, data=x)
    assert torch.equal(pyro.param("w").detach(), want)
    assert loaded.history.epoch == [1, 2] and loaded.metrics is None

    pyro.clear_param_store()  # a fit checkpoint holds the whole param store
    vae = VAE(64, 2, hidden=(4,))  # a built-in knows its row shape: no data needed
    xb = datasets.digits(binarize="static").train[:20]
    fit(vae.model, vae.guide, xb, epochs=1, progress=False, checkpoint=tmp_path / "v.pt")
    fresh = VAE(64, 2, hidden=(4,))
    load(tmp_path / "v.pt", model=fresh.model, guide=fresh.guide)
    assert torch.equal(fresh.decoder[0].weight, vae.decoder[0].weight)


def test_bad_directories_give_a_clear_error_naming_the_file(tmp_path):
    with pytest.raises(SavedModelError, match="does not exist"):
        load(tmp_path / "nothing")
    with pytest.raises(SavedModelError, match="holds no saved model"):
        load(tmp_path)
    d = save(tmp_path / "m", PPCA(4, 2))
    manifest = json.loads((d / MANIFEST).read_text())

    (d / MANIFEST).write_text(json.dumps({**manifest, "version": 2}))
    with pytest.raises(SavedModelError, match=r"newer pyro_lvm \(format version 2\).*upgrade"):
        load(d)
    (d / MANIFEST).write_text(json.dumps({**manifest, "format": "something.else"}))
    with pytest.raises(SavedModelError, match="is not a pyro_lvm saved model"):
        load(d)
    (d / MANIFEST).write_text(json.dumps(manifest)[:50])
    with pytest.raises(SavedModelError, match=f"{MANIFEST} cannot be read"):
        load(d)
    (d / MANIFEST).write_text(json.dumps(manifest))
    (d / PARAMS).write_bytes((d / PARAMS).read_bytes()[:100])
    with pytest.raises(SavedModelError, match=f"{PARAMS} is not the file"):
        load(d)
    assert issubclass(SavedModelError, CheckpointError)  # the command line: "bad file"


class _Payload:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['PAYLOAD_FLAG'], 'w').close()",))


def test_a_pickle_payload_is_refused_not_run(tmp_path, monkeypatch):
    d = save(tmp_path / "m", PPCA(4, 2))
    flag = tmp_path / "ran"
    monkeypatch.setenv("PAYLOAD_FLAG", str(flag))
    payload = pickle.dumps({"format": "pyro_lvm.saved_params", "x": _Payload()}, protocol=2)
    (d / PARAMS).write_bytes(payload)
    manifest = json.loads((d / MANIFEST).read_text())
    manifest["params"]["sha256"] = None  # past the integrity check, to torch.load itself
    (d / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SavedModelError, match="not a safe torch file"):
        load(d)
    assert not flag.exists()
    pickle.loads(payload)  # what an unsafe load would have done
    assert flag.exists()


def test_save_refuses_what_it_cannot_record():
    with pytest.raises(ValueError, match="pass dataset="):
        save("/unused", model_fn, guide_fn)
    with pytest.raises(ValueError, match="has none: pass guide="):
        save("/unused", model_fn)
    with pytest.raises(ValueError, match="needs 'name'"):
        save("/unused", PPCA(4, 2), dataset={"seed": 0})
    assert DataRecord.describe(torch.zeros(3, 2)).num_data == 3


def test_a_guide_on_another_model_or_a_foreign_vamp_prior_is_not_rebuilt(tmp_path):
    a, b = VAE(6, 2, hidden=(3,)), VAE(6, 2, hidden=(3,))
    guide = AmortizedNormal(b.model, hidden=(3,))
    save(tmp_path / "g", a.model, guide)
    with pytest.raises(SavedModelError, match="built on .*pass guide="):
        load(tmp_path / "g")
    from pyro_lvm.models.priors import VampPrior

    vae = VAE(6, 2, hidden=(3,), prior=VampPrior(2, a.encode, 6, num_components=2))
    with pytest.raises(ValueError, match="another encoder"):
        _ = vae.config


def test_an_autonormal_guide_is_run_on_every_row_when_two_rows_do_not_fit_its_plate(tmp_path):
    from pyro.infer.autoguide import AutoNormal

    x = torch.randn(12, 3)
    guide = AutoNormal(model_fn)
    fit(model_fn, guide, x, epochs=2, batch_size=None, progress=False)
    want = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    save(tmp_path, model_fn, guide, dataset=x)
    assert json.loads((tmp_path / MANIFEST).read_text())["example"]["rows"] == 12
    pyro.clear_param_store()
    load(tmp_path, model=model_fn, guide=AutoNormal(model_fn))
    got = dict(pyro.get_param_store().items())
    assert sorted(got) == sorted(want) and "AutoNormal.locs.z" in got
    assert all(torch.equal(got[k].detach(), want[k]) for k in want)


def test_a_loaded_built_in_data_set_is_described_without_loading_it_again(monkeypatch):
    from pyro_lvm import datasets

    spec = {"name": "digits", "seed": 1, "binarize": "static"}
    ds = datasets.digits(seed=1, binarize="static")
    reference = DataRecord.describe(spec)
    monkeypatch.setitem(datasets.DATASETS, "digits", None)  # a second load would fail
    record = DataRecord.describe(spec, loaded=ds)
    assert record == reference and DataRecord.describe(record) is record
