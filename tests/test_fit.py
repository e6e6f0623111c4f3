"""The fit loop: minibatch scaling, reproducibility, exact resume, safe stopping, bad input."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_lvm.guides import AmortizedNormal, PerDatapointNormal
from pyro_lvm.handlers import minibatch
from pyro_lvm.infer import CheckpointError, TrainingDivergedError, evaluate_loss, fit
from pyro_lvm.infer.checkpoint import load_checkpoint, save_checkpoint
from pyro_lvm.models import PPCA, VAE


# A user model written in the plain model(x) style, with a global latent outside the plate.
def hier_model(x):
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(theta, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def hier_delta_guide(x):
    """Deterministic guide (Delta sites): the ELBO estimate has no Monte Carlo noise."""
    pyro.sample("theta", dist.Delta(pyro.param("theta_q", torch.tensor(0.3))))
    z_q = pyro.param("z_q", lambda: torch.linspace(-1, 1, 12))
    with pyro.plate("data", x.shape[0]) as idx:
        pyro.sample("z", dist.Delta(z_q[idx]))


def test_minibatch_losses_average_to_the_full_data_loss():
    x = torch.linspace(-2, 3, 12)
    elbo = Trace_ELBO()
    full = elbo.loss(hier_model, hier_delta_guide, x)
    perm = torch.randperm(12)
    losses = []
    for batch in perm.split(4):  # every datapoint once: the average is exactly the full loss
        with minibatch(batch, num_data=12):
            losses.append(elbo.loss(hier_model, hier_delta_guide, x[batch]))
    assert sum(losses) / len(losses) == pytest.approx(full, rel=1e-6)
    # the global site is not scaled (a scale on it would break the identity)
    with minibatch(perm[:4], num_data=12):
        tr = pyro.poutine.trace(hier_model).get_trace(x[perm[:4]])
    assert tr.nodes["theta"]["scale"] == 1.0 and tr.nodes["z"]["scale"] == 3.0


def test_evaluate_loss_counts_global_sites_once():
    x = torch.linspace(-2, 3, 12)
    full = Trace_ELBO().loss(hier_model, hier_delta_guide, x) / 12
    chunked = evaluate_loss(hier_model, hier_delta_guide, x, batch_size=5)
    assert chunked == pytest.approx(full, rel=1e-6)


def test_fit_is_reproducible_with_a_seed():
    x = torch.randn(60)
    runs = []
    for _ in range(2):
        pyro.clear_param_store()
        guide = PerDatapointNormal(hier_model_local, num_data=60)
        h = fit(hier_model_local, guide, x, epochs=3, batch_size=16, seed=3, progress=False)
        runs.append((h.train_loss, guide.loc.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def hier_model_local(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def test_per_datapoint_guide_is_indexed_by_the_minibatch():
    """Classical VI: with shuffled minibatches each point's q must find its own posterior.

    z ~ N(0, 1), x ~ N(z, 0.5^2): the posterior mean is x / (1 + 0.25) = 0.8 x.
    """
    x = torch.randn(100) * 2
    guide = PerDatapointNormal(hier_model_local, num_data=100)
    optimizer = pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.01 ** (1 / 1200)})
    fit(hier_model_local, guide, x, optimizer=optimizer, epochs=300, batch_size=25,
        progress=False)
    loc = guide.loc.detach().squeeze(-1)
    # a wrong index would be off by |0.8 (x_i - x_j)|, about 2 on average
    err = (loc - 0.8 * x).abs()
    assert err.mean() < 0.05 and err.max() < 0.25
    scale = torch.nn.functional.softplus(guide.raw_scale.detach())
    assert (scale - math.sqrt(0.25 / 1.25)).abs().mean() < 0.05
    with pytest.raises(ValueError, match="num_data=100 .* got 20 rows"):
        guide(x[:20])
    with pytest.raises(ValueError, match="called on a data set of 30"):  # e.g. validation data
        evaluate_loss(hier_model_local, guide, x[:30])


def test_user_model_with_global_latent_fits_with_minibatches():
    """A hand-written model/guide pair with a global site works unchanged under minibatches."""
    torch.manual_seed(0)
    x = 2.0 + torch.randn(300) * math.sqrt(1 + 0.25)

    def guide(x):
        loc = pyro.param("theta_loc", torch.tensor(0.0))
        pyro.sample("theta", dist.Normal(loc, 0.05))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.8 * x + 0.2 * loc, math.sqrt(0.2)))

    fit(hier_model, guide, x, optimizer=pyro.optim.Adam({"lr": 0.02}), epochs=20,
        batch_size=30, progress=False)
    # posterior mean of theta given x: sum(x) / (N + 1.25) (conjugate Normal model)
    expected = x.sum() / (300 + 1.25)
    assert pyro.param("theta_loc").item() == pytest.approx(expected.item(), abs=0.1)


def test_minibatching_a_model_without_the_data_plate_is_refused():
    def model(x):
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([x.shape[0]]).to_event(1), obs=x)

    def guide(x):
        pass

    with pytest.raises(ValueError, match=r"pyro.plate\('data', x.shape\[0\]\)"):
        fit(model, guide, torch.randn(20), batch_size=5, progress=False)
    fit(model, guide, torch.randn(20), batch_size=None, epochs=1, progress=False)  # full batch


def _vae_run(tmp_path, epochs, checkpoint=None, resume=False, **kw):
    pyro.clear_param_store()
    torch.manual_seed(123)  # the initial weights are random: the resumed run must overwrite them
    x = (torch.rand(120, 16) < 0.3).float()
    val = (torch.rand(40, 16) < 0.3).float()
    vae = VAE(16, 3, hidden=(8,))
    guide = AmortizedNormal(vae.model, hidden=(8,))  # lazily built: created inside fit
    h = fit(vae.model, guide, x, val_data=val, optimizer=pyro.optim.Adam({"lr": 0.01}),
            epochs=epochs, batch_size=32, seed=7, checkpoint=checkpoint, resume=resume,
            progress=False, **kw)
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    return h, params


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    full, full_params = _vae_run(tmp_path, epochs=5)
    ckpt = tmp_path / "run.pt"
    first, _ = _vae_run(tmp_path, epochs=2, checkpoint=ckpt)
    assert len(first.epoch) == 2 and ckpt.exists()
    resumed, resumed_params = _vae_run(tmp_path, epochs=5, checkpoint=ckpt, resume=True)
    assert resumed.epoch == [1, 2, 3, 4, 5]
    assert resumed.train_loss == full.train_loss  # bitwise: same seed, same numbers
    assert resumed.val_loss == full.val_loss
    assert resumed.num_steps == full.num_steps
    assert full_params.keys() == resumed_params.keys()
    for k in full_params:
        assert torch.equal(full_params[k], resumed_params[k]), k


def test_checkpoint_is_safe_to_load_and_complete(tmp_path):
    ckpt = tmp_path / "c.pt"
    _vae_run(tmp_path, epochs=2, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)  # plain tensors and Python values only
    assert state["epoch"] == 2
    assert {"params", "optimizer", "history", "rng", "best_params"} <= state.keys()
    assert not list(tmp_path.glob(".c.pt.*"))  # no temporary file left behind


def test_the_best_epoch_is_kept_once_in_the_history(tmp_path):
    """Regression: fit kept the best epoch both in its locals (saved as checkpoint["best"])
    and in History; now History.best_epoch is the only record, and early stopping after a
    resume counts from it."""
    ckpt = tmp_path / "c.pt"
    h, _ = _vae_run(tmp_path, epochs=3, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert "best" not in state and state["history"]["best_epoch"] == h.best_epoch
    assert h.best_epoch == h.epoch[h.val_loss.index(h.best_val_loss)]
    full, _ = _vae_run(tmp_path, epochs=8, patience=1)
    first, _ = _vae_run(tmp_path, epochs=2, patience=1, checkpoint=tmp_path / "p.pt")
    resumed, _ = _vae_run(tmp_path, epochs=8, patience=1, checkpoint=tmp_path / "p.pt",
                          resume=True)
    assert (resumed.epoch, resumed.best_epoch, resumed.stop_reason) == (
        full.epoch, full.best_epoch, full.stop_reason)


def test_unseeded_fit_shuffles_with_the_global_random_state():
    """Regression: fit(seed=None) shuffled with a generator seeded 0 whatever the global
    seed; now its shuffles follow torch's global RNG like every other unseeded draw."""
    x = torch.arange(40.0)[:, None]

    def first_batch(global_seed):
        pyro.clear_param_store()
        pyro.set_rng_seed(global_seed)
        loc = torch.zeros(1, requires_grad=True)
        seen = []

        def model(x):
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Normal(pyro.param("loc", loc), 1.0).to_event(1), obs=x)

        fit(model, lambda x: None, x, epochs=1, batch_size=10, seed=None, progress=False,
            transform=lambda b: seen.append(b[:, 0].tolist()) or b)
        return seen[0]

    assert first_batch(1) == first_batch(1)
    assert first_batch(1) != first_batch(2)


def test_resuming_with_another_model_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "c.pt"
    _vae_run(tmp_path, epochs=1, checkpoint=ckpt)
    pyro.clear_param_store()
    x = (torch.rand(120, 16) < 0.3).float()
    vae = VAE(16, 5, hidden=(8,))
    shape = r"parameters of another shape: \['vae.generative\$\$\$0.0.weight'\]"
    with pytest.raises(CheckpointError, match=r"written by a different run: .*" + shape):
        fit(vae.model, vae.guide, x, epochs=2, checkpoint=ckpt, resume=True, progress=False)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_state(tmp_path):
    calls = {"n": 0}

    def model(x):
        calls["n"] += torch.is_grad_enabled()  # steps (not fit's no-grad check of the sites)
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, scale), obs=x)
        if calls["n"] == 5 and torch.is_grad_enabled():  # the fifth step goes wrong
            pyro.factor("bad", torch.tensor(float("nan")))

    def guide(x):
        pass

    x = torch.randn(10)
    fit(model, guide, x, optimizer=pyro.optim.Adam({"lr": 0.1}), epochs=3, batch_size=None,
        progress=False)
    reference = pyro.param("scale").item()  # the parameters step 4 ran with

    pyro.clear_param_store()
    calls["n"] = 0
    ckpt = tmp_path / "c.pt"
    with pyro.validation_enabled(False), pytest.raises(
            TrainingDivergedError, match=r"non-finite loss \(nan\) at step 5 .* step 4") as e:
        fit(model, guide, x, optimizer=pyro.optim.Adam({"lr": 0.1}), epochs=10,
            batch_size=None, checkpoint=ckpt, progress=False)
    assert e.value.step == 5 and len(e.value.history.epoch) == 4
    assert pyro.param("scale").item() == reference
    assert load_checkpoint(ckpt)["epoch"] == 4  # the last good checkpoint is on disk


def test_invalid_distribution_parameter_stops_with_the_step():
    def model(x):
        scale = pyro.param("scale", torch.tensor(1.0))  # unconstrained: can go negative
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, scale), obs=x)

    x = 0.01 * torch.randn(20)  # the first SGD step overshoots the scale below zero
    with pytest.raises(TrainingDivergedError, match=r"invalid distribution parameter at step 2"
                       r".*Expected parameter scale.*restored to their values at step 1") as e:
        fit(model, lambda x: None, x, optimizer=pyro.optim.SGD({"lr": 0.1}), epochs=50,
            batch_size=None, progress=False)
    assert pyro.param("scale").item() == 1.0
    assert e.value.step == 2


def test_non_finite_gradient_is_caught():
    def model(x):
        a = pyro.param("a", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(torch.sqrt(a.abs()), 1.0), obs=x)  # d/da at 0 is nan

    with pytest.raises(TrainingDivergedError, match="gradient of parameter 'a' at step 1"):
        fit(model, lambda x: None, torch.randn(10), epochs=1, progress=False)
    assert pyro.param("a").item() == 0.0


def mean_model(x):
    """x ~ N(a, 1) with a parameter a and no latent: the fit is deterministic."""
    a = pyro.param("a", torch.tensor(0.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(a, 1.0), obs=x)


def no_guide(x):
    pass


def drifting_fit(**kwargs):
    """Training pulls a towards the train mean (+5); the validation data sit at -5, so the
    validation loss only gets worse after the first epoch."""
    train, val = 5 + torch.randn(50), -5 + torch.randn(50)
    kwargs = dict(optimizer=pyro.optim.SGD({"lr": 0.001}), batch_size=None, progress=False,
                  **kwargs)
    if kwargs.pop("validate", True):
        kwargs["val_data"] = val
    return fit(mean_model, no_guide, train, **kwargs)


def test_early_stopping_restores_the_best_epoch():
    drifting_fit(epochs=1, validate=False)
    after_one = pyro.param("a").item()
    pyro.clear_param_store()
    h = drifting_fit(patience=2, epochs=50)
    assert h.epoch == [1, 2, 3] and h.best_epoch == 1 and h.params_epoch == 1
    assert "early stopping" in h.stop_reason
    assert pyro.param("a").item() == pytest.approx(after_one)
    assert h.val_loss[0] < h.val_loss[1] < h.val_loss[2]


def test_last_epoch_is_kept_without_early_stopping_unless_asked():
    h = drifting_fit(epochs=4)
    assert h.best_epoch == 1 and h.params_epoch == 4
    last = pyro.param("a").item()
    pyro.clear_param_store()
    h = drifting_fit(epochs=4, restore_best=True)
    assert h.params_epoch == 1 and pyro.param("a").item() < last


def test_resuming_a_run_that_stopped_early_trains_no_further(tmp_path):
    drifting_fit(epochs=50, patience=2, checkpoint=tmp_path / "c.pt")
    best_a = pyro.param("a").item()
    pyro.clear_param_store()
    h = drifting_fit(epochs=50, patience=2, checkpoint=tmp_path / "c.pt", resume=True)
    assert h.epoch == [1, 2, 3] and pyro.param("a").item() == pytest.approx(best_a)


def test_history_plots_itself():
    ppca = PPCA(4, 2)
    x = ppca.sample(100)
    h = fit(ppca.model, ppca.guide, x, val_data=x[:20], epochs=2, batch_size=50, progress=False)
    fig = h.plot(reference=1.0)
    assert len(fig.axes[0].lines) == 4  # train, validation, best epoch, reference
    assert all(t > 0 for t in h.epoch_time)


def test_learning_rate_scheduler_is_stepped_per_epoch(tmp_path):
    ppca = PPCA(4, 2)
    x = ppca.sample(100)
    sched = pyro.optim.ExponentialLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.01},
                                      "gamma": 0.5})
    fit(ppca.model, ppca.guide, x, optimizer=sched, epochs=3, batch_size=50, progress=False)
    lrs = {s.optimizer.param_groups[0]["lr"] for s in sched.optim_objs.values()}
    assert lrs == {0.01 * 0.5**3}
    with pytest.raises(ValueError, match="ClippedAdam"):
        fit(ppca.model, ppca.guide, x, optimizer=sched, epochs=1, checkpoint=tmp_path / "c.pt",
            progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda():
    ppca = PPCA(4, 2)
    x = ppca.sample(100)
    h = fit(ppca.model, ppca.guide, x, epochs=2, device="cuda", progress=False)
    assert ppca.loc.device.type == "cuda" and len(h.epoch) == 2


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    import random

    import numpy as np

    from pyro_lvm.infer.checkpoint import get_rng_state, set_rng_state

    shuffle = torch.Generator().manual_seed(5)
    save_checkpoint({"rng": get_rng_state(shuffle)}, tmp_path / "r.pt")
    legacy_numpy = np.random.rand  # noqa: NPY002 (the global RNG users seed is under test)
    expected = (torch.rand(3), legacy_numpy(3), random.random(),
                torch.randperm(10, generator=shuffle))
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"], shuffle)
    again = (torch.rand(3), legacy_numpy(3), random.random(),
             torch.randperm(10, generator=shuffle))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and torch.equal(expected[3], again[3])


def test_transform_draws_a_fresh_binarization_per_minibatch():
    from pyro_lvm.datasets import dynamic_binarize

    seen = []

    def model(x):
        if torch.is_grad_enabled():  # the steps' batches (not fit's no-grad check of the sites)
            seen.append(x.clone())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Bernoulli(0.5 * torch.ones(x.shape[1])).to_event(1), obs=x)

    gray = torch.full((10, 6), 0.5)
    fit(model, lambda x: None, gray, epochs=2, batch_size=None, transform=dynamic_binarize,
        progress=False)
    assert all(bool(((b == 0) | (b == 1)).all()) for b in seen)
    assert not torch.equal(seen[0], seen[1])  # redrawn every time


# -- one torch optimizer over all parameters (FusedOptimizer) ----------------------------------

def _two_part_pair():
    """A pair whose parameter "b" is used only on even calls: a step without it must leave it
    (and its optimizer state) alone, as Pyro's per-parameter wrapper does."""
    calls = {"n": 0}

    def model(x):
        calls["n"] += 1
        a = pyro.param("a", torch.zeros(3))
        loc = a + (pyro.param("b", torch.ones(3)) if calls["n"] % 2 == 0 else 0.0)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(x):
        w = pyro.param("w", torch.full((3,), 0.5))
        s = pyro.param("s", torch.ones(3), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(w * x, s).to_event(1))

    return model, guide, calls


@pytest.mark.parametrize("make", [lambda: pyro.optim.Adam({"lr": 0.05}),
                                  lambda: pyro.optim.SGD({"lr": 0.01, "momentum": 0.9})])
def test_fused_optimizer_takes_the_same_steps_as_pyros_wrapper(make):
    from pyro.infer import SVI

    from pyro_lvm.infer import FusedOptimizer

    x = torch.randn(20, 3)
    results = []
    for optim in (make(), FusedOptimizer(make())):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model, guide, _ = _two_part_pair()
        svi = SVI(model, guide, optim, Trace_ELBO())
        losses = [svi.step(x) for _ in range(9)]
        results.append((losses, {k: v.detach().clone()
                                 for k, v in pyro.get_param_store().named_parameters()},
                        optim.get_state()))
    (l1, p1, s1), (l2, p2, s2) = results
    assert l1 == l2
    assert p1.keys() == p2.keys() and all(torch.equal(p1[k], p2[k]) for k in p1)
    assert s1.keys() == s2.keys()
    for name in s1:  # the same per-parameter state, in Pyro's format
        for key, value in s1[name]["state"][0].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2[name]["state"][0][key]))
    if "exp_avg" in s1["b"]["state"][0]:  # b stepped on the 4 even calls only
        assert int(s2["b"]["state"][0]["step"]) == 4 and int(s2["a"]["state"][0]["step"]) == 9


def test_fit_steps_one_optimizer_with_the_same_result(tmp_path, monkeypatch):
    from pyro_lvm.infer import optimizer as optimizer_module

    fused, fused_params = _vae_run(tmp_path, epochs=2)
    monkeypatch.setattr(optimizer_module.FusedOptimizer, "eligible", staticmethod(lambda o: False))
    plain, plain_params = _vae_run(tmp_path, epochs=2)
    assert fused.train_loss == plain.train_loss and fused.val_loss == plain.val_loss
    assert all(torch.equal(fused_params[k], plain_params[k]) for k in plain_params)


def test_checkpoints_move_between_the_fused_and_the_per_parameter_optimizer(tmp_path,
                                                                            monkeypatch):
    from pyro_lvm.infer import optimizer as optimizer_module

    full, full_params = _vae_run(tmp_path, epochs=4)
    ckpt = tmp_path / "run.pt"
    with monkeypatch.context() as m:  # written by Pyro's per-parameter optimizers
        m.setattr(optimizer_module.FusedOptimizer, "eligible", staticmethod(lambda o: False))
        _vae_run(tmp_path, epochs=2, checkpoint=ckpt)
    resumed, resumed_params = _vae_run(tmp_path, epochs=4, checkpoint=ckpt, resume=True)
    assert resumed.train_loss == full.train_loss
    assert all(torch.equal(full_params[k], resumed_params[k]) for k in full_params)


def test_fit_hands_the_optimizer_state_back():
    from pyro.infer import SVI

    model, guide, _ = _two_part_pair()
    x = torch.randn(20, 3)
    optim = pyro.optim.Adam({"lr": 0.05})
    fit(model, guide, x, optimizer=optim, epochs=3, batch_size=None, progress=False)
    assert int(optim.get_state().get("a", {"state": {0: {"step": 0}}})["state"][0]["step"]) == 0
    SVI(model, guide, optim, Trace_ELBO()).step(x)  # picks up fit's state, then steps once
    assert int(optim.get_state()["a"]["state"][0]["step"]) == 4


def test_fused_optimizer_refuses_what_it_cannot_reproduce():
    from pyro_lvm.infer import FusedOptimizer

    sched = pyro.optim.ExponentialLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.1},
                                      "gamma": 0.5})
    for optim, match in [(pyro.optim.ClippedAdam({"lr": 0.1}), "ClippedAdam"),
                         (sched, "scheduler"),
                         (pyro.optim.Adam(lambda name: {"lr": 0.1}), "per-parameter function"),
                         (pyro.optim.Adam({"lr": 0.1}, {"clip_norm": 1.0}), "clips")]:
        assert not FusedOptimizer.eligible(optim)
        with pytest.raises(ValueError, match=match):
            FusedOptimizer(optim)


def test_data_outside_the_support_is_caught_after_the_first_step():
    """Pyro's validation runs on the first step only; the data of every later batch are still
    checked against the model's supports (a non-binary value under a Bernoulli likelihood
    would otherwise give a finite, wrong loss)."""
    vae = VAE(6, 2, hidden=(4,))
    x = (torch.rand(40, 6) < 0.5).float()
    seen = []

    def halve_later(batch):  # the second minibatch on is no longer binary
        seen.append(1)
        return batch if len(seen) == 1 else batch * 0.5 + 0.25

    with pytest.raises(ValueError, match=r"step 2 .*observed site 'x' has value 0\.[27]5 at "
                                         r"index \[\d+, \d+\], outside the support of Bernoulli"):
        fit(vae.model, vae.guide, x, epochs=1, batch_size=10, transform=halve_later,
            progress=False)



# -- what a checkpoint records, and resuming with changes ---------------------------------------
def _mean_fit(ckpt, epochs, resume=False, lr=0.05, batch_size=10, seed=0, data=None, **kw):
    x = torch.linspace(2.0, 4.0, 40) if data is None else data
    return fit(mean_model, no_guide, x, optimizer=pyro.optim.Adam({"lr": lr}), epochs=epochs,
               batch_size=batch_size, seed=seed, checkpoint=ckpt, resume=resume,
               progress=False, **kw)


@pytest.mark.parametrize("change, words", [
    (dict(lr=1e-7), r"optimizer arguments \{'lr': 0.05\} then, \{'lr': 1e-07\} now"),
    (dict(batch_size=20), "batch size 10 then, 20 now"),
    (dict(seed=3), "seed 0 then, 3 now"),
    (dict(data=torch.linspace(2.0, 4.0, 40).flip(0)), r"data \(a fingerprint\)"),
    # before, only rows 0, N/2 and N-1 were read: these two resumed silently
    (dict(data=torch.linspace(2.0, 4.0, 40).index_fill(0, torch.tensor([7]), 9.0)),
     r"data \(a fingerprint\)"),
    (dict(data=torch.linspace(2.0, 4.0, 40)[[0, 2, 1, *range(3, 40)]]),
     r"data \(a fingerprint\)"),
    (dict(data=torch.linspace(2.0, 4.0, 41)), "number of rows 40 then, 41 now"),
])
def test_resuming_with_changed_arguments_lists_the_changes(tmp_path, change, words):
    ckpt = tmp_path / "c.pt"
    _mean_fit(ckpt, epochs=2)
    pyro.clear_param_store()
    with pytest.raises(CheckpointError, match=f"written by a different run: {words}.*"
                                              "resume='override'"):
        _mean_fit(ckpt, epochs=4, resume=True, **change)


@pytest.mark.filterwarnings("ignore:estimator=.dreg.")
def test_a_checkpoint_of_an_importance_weighted_objective_resumes(tmp_path):
    """Before: the record kept IWAE's estimator as an enum, which a weights_only load refuses:
    no IWAE run could be resumed."""
    from pyro_lvm.infer import IWAE

    ckpt = tmp_path / "c.pt"
    _mean_fit(ckpt, epochs=2, loss=IWAE(4, estimator="dreg"))
    assert load_checkpoint(ckpt)["fit"]["record"]["objective's settings"]["estimator"] == "dreg"
    pyro.clear_param_store()
    _mean_fit(ckpt, epochs=3, loss=IWAE(4, estimator="dreg"), resume=True)
    pyro.clear_param_store()
    with pytest.raises(CheckpointError, match="'estimator': 'dreg'.*then.*'estimator': 'stl'"):
        _mean_fit(ckpt, epochs=4, loss=IWAE(4, estimator="stl"), resume=True)


def test_resume_override_uses_the_new_learning_rate(tmp_path):
    import shutil

    ckpt, copy = tmp_path / "c.pt", tmp_path / "copy.pt"
    _mean_fit(ckpt, epochs=2)
    shutil.copy(ckpt, copy)
    at_checkpoint = pyro.param("a").item()
    pyro.clear_param_store()
    _mean_fit(ckpt, epochs=4, resume="override", lr=1e-7)  # two more epochs, barely moving
    assert abs(pyro.param("a").item() - at_checkpoint) < 1e-5
    assert load_checkpoint(ckpt)["fit"]["record"]["optimizer arguments"] == {"lr": 1e-7}
    pyro.clear_param_store()
    _mean_fit(copy, epochs=4, resume=True)  # the same two epochs at the old rate move it
    assert abs(pyro.param("a").item() - at_checkpoint) > 0.1


def test_a_parameter_the_checkpoint_lacks_is_named_and_kept_under_override(tmp_path):
    ckpt = tmp_path / "c.pt"
    _mean_fit(ckpt, epochs=2)

    def wider_model(x):
        a = pyro.param("a", torch.tensor(0.0))
        s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(a, s), obs=x)

    x = torch.linspace(2.0, 4.0, 40)
    kw = dict(optimizer=pyro.optim.Adam({"lr": 0.05}), epochs=3, batch_size=10, seed=0,
              checkpoint=ckpt, progress=False)
    pyro.clear_param_store()
    with pytest.raises(CheckpointError, match=r"parameters not in the checkpoint: \['s'\]"):
        fit(wider_model, no_guide, x, resume=True, **kw)
    pyro.clear_param_store()
    fit(wider_model, no_guide, x, resume="override", **kw)
    assert pyro.param("s").item() != 1.0  # trained from its initial value


def test_checkpoints_hold_only_the_pairs_parameters(tmp_path):
    """An earlier model's parameters in the store are not saved, so the checkpoint resumes in
    a fresh process."""
    pyro.param("left_over_from_another_model", torch.ones(3))
    ckpt = tmp_path / "c.pt"
    _mean_fit(ckpt, epochs=2)
    assert sorted(load_checkpoint(ckpt)["params"]) == ["a"]
    pyro.clear_param_store()
    full = _mean_fit(None, epochs=4)
    pyro.clear_param_store()  # a fresh process
    resumed = _mean_fit(ckpt, epochs=4, resume=True)
    assert resumed.train_loss == full.train_loss


def test_a_changed_byte_inside_a_stored_tensor_is_found(tmp_path):
    ckpt = tmp_path / "c.pt"
    _mean_fit(ckpt, epochs=2)
    state = load_checkpoint(ckpt)
    raw = bytearray(ckpt.read_bytes())
    needle = state["params"]["a"].numpy().tobytes()
    at = raw.find(needle)
    assert at > 0
    raw[at] ^= 0x01
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupted: its tensors do not match"):
        load_checkpoint(ckpt)


# -- interrupts, gradients, the user's data -----------------------------------------------------
def test_an_interrupt_keeps_the_last_completed_step_and_resumes_exactly(tmp_path):
    """Ctrl-C inside step 6 (epoch 3 of 2-batch epochs): the parameters are step 5's, the
    history has epochs 1-2, and the checkpoint written at the interrupt resumes mid-epoch to
    exactly the uninterrupted run."""
    from pyro_lvm.infer import TrainingInterrupted

    calls = {"n": 0}

    def interrupted_model(x):
        calls["n"] += torch.is_grad_enabled()  # steps, not fit's no-grad check of the sites
        if calls["n"] == 6:  # inside the sixth step's loss
            raise KeyboardInterrupt
        mean_model(x)

    x = torch.linspace(2.0, 4.0, 40)

    def run(model, **kw):
        return fit(model, no_guide, x, optimizer=pyro.optim.Adam({"lr": 0.05}), epochs=4,
                   batch_size=20, seed=0, progress=False, **kw)

    ckpt = tmp_path / "c.pt"
    with pytest.raises(TrainingInterrupted, match=r"after step 5 .*2 completed epochs.*resume="
                                                  r"True continues from step 5") as e:
        run(interrupted_model, checkpoint=ckpt)
    assert isinstance(e.value, KeyboardInterrupt)
    assert e.value.history.num_steps == 5 and e.value.history.epoch == [1, 2]
    assert load_checkpoint(ckpt)["position"]["batch"] == 1
    assert all(p.grad is None for _, p in pyro.get_param_store().named_parameters())
    pyro.clear_param_store()
    resumed = run(mean_model, checkpoint=ckpt, resume=True)
    resumed_a = pyro.param("a").item()
    pyro.clear_param_store()
    full = run(mean_model)
    assert resumed.train_loss == full.train_loss and resumed.num_steps == full.num_steps == 8
    assert resumed_a == pyro.param("a").item()


def test_an_interrupt_inside_the_update_undoes_it(monkeypatch):
    from pyro_lvm.infer import TrainingInterrupted, optimizer

    real, calls = optimizer.FusedOptimizer.__call__, {"n": 0}

    def step_then_interrupt(self, params, *args, **kwargs):
        real(self, params, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # after the third update, before fit has recorded it
            raise KeyboardInterrupt

    x = torch.linspace(2.0, 4.0, 40)
    kw = dict(batch_size=None, seed=0, progress=False)
    monkeypatch.setattr(optimizer.FusedOptimizer, "__call__", step_then_interrupt)
    with pytest.raises(TrainingInterrupted, match="after step 2"):
        fit(mean_model, no_guide, x, optimizer=pyro.optim.Adam({"lr": 0.05}), epochs=10, **kw)
    interrupted = pyro.param("a").item()
    monkeypatch.undo()
    pyro.clear_param_store()
    fit(mean_model, no_guide, x, optimizer=pyro.optim.Adam({"lr": 0.05}), epochs=2, **kw)
    assert interrupted == pyro.param("a").item()


def test_fit_leaves_no_gradient_and_never_writes_onto_the_data():
    x = torch.linspace(2.0, 4.0, 40).requires_grad_()
    fit(mean_model, no_guide, x, epochs=2, batch_size=10, progress=False)
    assert x.grad is None
    assert all(p.grad is None for _, p in pyro.get_param_store().named_parameters())
    with pytest.raises(TrainingDivergedError):  # and on an error exit
        fit(lambda x: pyro.factor("bad", pyro.param("a") * float("nan")), no_guide, x,
            epochs=1, batch_size=None, progress=False)
    assert all(p.grad is None for _, p in pyro.get_param_store().named_parameters())


@pytest.mark.parametrize("where, words", [("directory", "is a directory"),
                                          ("missing/c.pt", "does not exist")])
def test_an_unwritable_checkpoint_path_is_refused_before_training(tmp_path, where, words):
    (tmp_path / "directory").mkdir()
    calls = []
    with pytest.raises(ValueError, match=words):
        fit(lambda x: calls.append(1) or mean_model(x), no_guide, torch.randn(10), epochs=1,
            checkpoint=tmp_path / where, progress=False)
    assert not calls  # nothing trained


def test_a_transform_with_its_own_generator_is_named_when_checkpointing(tmp_path):
    from pyro_lvm.datasets import dynamic_binarize

    own = torch.Generator().manual_seed(0)

    def private_noise(x):
        return x + torch.rand(x.shape, generator=own)

    kw = dict(epochs=1, batch_size=10, checkpoint=tmp_path / "c.pt", progress=False)
    with pytest.warns(UserWarning, match="generator of its own"):
        fit(mean_model, no_guide, torch.rand(20), transform=private_noise, **kw)
    pyro.clear_param_store()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the global random state: resumable, no warning
        fit(mean_model, no_guide, torch.rand(20), transform=dynamic_binarize, **kw)


def test_an_interrupted_vae_resumes_bit_identically(tmp_path):
    """The same with random draws: the random states saved are those after the last
    completed step, not those of the step the interrupt cut short."""
    from pyro_lvm.infer import TrainingInterrupted

    def run(interrupt_at=None, **kw):
        pyro.clear_param_store()
        torch.manual_seed(5)
        vae = VAE(16, 3, hidden=(8,))
        calls = {"n": 0}

        def model(x):
            calls["n"] += 1
            if calls["n"] == interrupt_at:
                pyro.sample("noise", dist.Normal(0.0, 1.0))  # draws, then stops mid-step
                raise KeyboardInterrupt
            vae.model(x)

        x = (torch.rand(100, 16, generator=torch.Generator().manual_seed(0)) < 0.3).float()
        h = fit(model, vae.guide, x, optimizer=pyro.optim.Adam({"lr": 0.01}), epochs=3,
                batch_size=25, seed=1, progress=False, **kw)
        return h, {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}

    ckpt = tmp_path / "c.pt"
    with pytest.raises(TrainingInterrupted):
        run(interrupt_at=7, checkpoint=ckpt)  # step 7: the third batch of epoch 2
    resumed, resumed_params = run(checkpoint=ckpt, resume=True)
    full, full_params = run()
    assert resumed.train_loss == full.train_loss
    assert all(torch.equal(resumed_params[k], full_params[k]) for k in full_params)


def test_the_transform_check_leaves_the_random_state_as_it_was(tmp_path):
    from pyro_lvm.datasets import dynamic_binarize

    x = torch.rand(20)
    results = []
    for checkpoint in (None, tmp_path / "c.pt"):  # the check runs only with a checkpoint
        pyro.clear_param_store()
        results.append(fit(mean_model, no_guide, x, epochs=2, batch_size=10, seed=0,
                           transform=dynamic_binarize, checkpoint=checkpoint,
                           progress=False).train_loss)
    assert results[0] == results[1]
