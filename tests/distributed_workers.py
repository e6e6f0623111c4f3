"""What each of the 2 gloo processes of tests/test_distributed.py runs (spawned), and the
single-process reference that emulates them on the same random draws."""

from __future__ import annotations

import datetime
import json
import os
import traceback
from pathlib import Path

import pyro
import pyro.optim
import torch
import torch.distributed as dist
from pyro.infer import Trace_ELBO
from pyro.infer.util import zero_grads
from torch.utils.data import TensorDataset

NUM_DATA, BATCH, STEPS_EPOCHS = 64, 10, 1
SEED = 3


def make_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return (torch.rand(NUM_DATA, 12, generator=g) < 0.3).float()


def make_vae():
    from pyro_lvm.models import VAE

    torch.manual_seed(5)  # the same initial parameters on every rank
    return VAE(12, 2, hidden=(8,))


def make_loss(kind: str):
    from pyro_lvm.infer import IWAE

    return Trace_ELBO() if kind == "elbo" else IWAE(4, estimator="dreg")


def params_of() -> dict[str, list]:
    return {k: v.detach().double().flatten().tolist()
            for k, v in sorted(pyro.get_param_store().named_parameters())}


def reference(kind: str, world: int, epochs: int = STEPS_EPOCHS) -> dict:
    """One process over the same global minibatches: each shard with its rank's RNG stream
    and its scale, gradients summed, one optimizer step (what the W ranks do together)."""
    from pyro_lvm.handlers import minibatch
    from pyro_lvm.infer.fit import rank_seed
    from pyro_lvm.rng import generator

    pyro.clear_param_store()
    x = make_data()
    vae = make_vae()
    loss, optim = make_loss(kind), pyro.optim.Adam({"lr": 0.01})
    pyro.set_rng_seed(SEED)
    shuffle = generator(SEED)
    states = []
    for r in range(world):
        torch.manual_seed(rank_seed(SEED, r))
        states.append(torch.get_rng_state())
    for _ in range(epochs):
        perm = torch.randperm(NUM_DATA, generator=shuffle)
        for start in range(0, NUM_DATA, BATCH):
            batch = perm[start:start + BATCH]
            params = set()
            for r in range(world):
                idx = batch[r::world]
                torch.set_rng_state(states[r])
                with pyro.poutine.trace(param_only=True) as cap, \
                        minibatch(idx, NUM_DATA, "data", len(batch), 1.0 / world):
                    loss.loss_and_grads(vae.model, vae.guide, x[idx])
                states[r] = torch.get_rng_state()
                params |= {s["value"].unconstrained() for s in cap.trace.nodes.values()}
            optim(params)
            zero_grads(params)
    return params_of()


def _train(kind: str, data, out: Path, epochs: int = STEPS_EPOCHS, **kwargs):
    from pyro_lvm.infer import evaluate_loss, fit

    pyro.clear_param_store()
    vae = make_vae()
    history = fit(vae.model, vae.guide, data, loss=make_loss(kind),
                  optimizer=pyro.optim.Adam({"lr": 0.01}), epochs=epochs, batch_size=BATCH,
                  seed=SEED, progress=False, **kwargs)
    val = evaluate_loss(vae.model, vae.guide, make_data(), seed=1)
    return {"params": params_of(), "train_loss": history.train_loss, "val": val}


def diagnostics() -> dict:
    """Every sharded diagnostic of one fixed VAE (the same on every rank)."""
    from pyro_lvm.diagnostics import bayes_loop, information, log_likelihood
    from pyro_lvm.infer import evaluate_loss

    pyro.clear_param_store()
    vae = make_vae()
    x = make_data()
    ev = log_likelihood(vae.model, vae.guide, TensorDataset(x), num_particles=50, chunk_size=9)
    info = information(vae.model, vae.guide, x, num_samples=3, batch_size=10,
                       estimator="leave_one_out")
    loop = bayes_loop(vae.model, vae.guide, x, num_posterior_samples=19, seed=None)
    from pyro_lvm.diagnostics import inference_gaps

    gaps = inference_gaps(vae.model, vae.guide, x[:20], steps=6, num_particles=20,
                          batch_size=8)
    return {"log_px": ev.log_px.tolist(), "ess": ev.ess.tolist(),
            "rate": info.rate.value, "mi": info.mutual_information.value,
            "mi_se": info.mutual_information.se, "kl": info.marginal_kl.value,
            "kl_per_dim": info.marginal_kl_per_dim.tolist(),
            "tc": info.total_correlation.value,
            "loop_p": loop.p_value, "ranks": loop.ranks.tolist(),
            "loss": evaluate_loss(vae.model, vae.guide, x, batch_size=7, seed=2),
            "gaps_best": gaps.elbo_best.tolist(), "gaps_log_px": gaps.log_px.tolist()}


def _error_of(call) -> str:
    try:
        call()
        return "no error"
    except Exception as e:  # noqa: BLE001 (recorded for the test)
        return f"{type(e).__name__}: {e}"


def faults(rank: int, out: Path) -> dict:
    """What must fail on every rank, with a clear message, instead of a hang or a silent
    wrong number (found in review); and what must work."""
    import pyro.distributions as dist

    from pyro_lvm.infer import evaluate_loss, fit

    x = make_data()
    result = {}

    def model(x):  # the data plate is called "obs", not "data"
        mu = pyro.param("mu", torch.zeros(()))
        with pyro.plate("obs", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0).expand([12]).to_event(1), obs=x)

    def guide(x):
        pass

    pyro.clear_param_store()
    result["no plate, full batch"] = _error_of(lambda: fit(
        model, guide, x, batch_size=None, epochs=1, progress=False))
    pyro.clear_param_store()
    vae = make_vae()
    other = x.clone()
    if rank == 1:
        other[NUM_DATA // 2] = 1 - other[NUM_DATA // 2]  # same length, other rows
    result["other rows"] = _error_of(lambda: fit(vae.model, vae.guide, other, epochs=1,
                                                 batch_size=BATCH, progress=False))
    result["renyi"] = _error_of(lambda: fit(vae.model, vae.guide, x, epochs=1,
                                            batch_size=None, progress=False,
                                            loss=pyro.infer.RenyiELBO()))
    result["checkpoint on one rank"] = _error_of(lambda: fit(
        vae.model, vae.guide, x, epochs=1, batch_size=BATCH, progress=False,
        checkpoint=(out / "c.pt") if rank == 0 else None))
    bad = x.clone()
    bad[1] = float("nan")  # row 1 is in rank 1's shard of every batch that holds it
    result["nan row"] = _error_of(lambda: fit(vae.model, vae.guide, TensorDataset(bad),
                                              epochs=1, batch_size=BATCH, progress=False))
    # a ragged last global batch smaller than the processes: 65 rows, batch 16 -> 1 row
    pyro.clear_param_store()
    vae = make_vae()
    seen = []
    h = fit(vae.model, vae.guide, torch.cat([x, x[:1]]), epochs=1, batch_size=16,
            progress=False, seed=SEED,
            callbacks=[lambda e, h: seen.append(evaluate_loss(vae.model, vae.guide, x))])
    result["ragged below W"] = {"steps": h.num_steps, "loss": h.train_loss, "params": params_of(),
                                "callback": seen}
    return result


def worker(rank: int, world: int, store: str, out: str, scenario: str) -> None:
    """One rank: init gloo through a file store, run ``scenario``, write what it found."""
    torch.set_num_threads(1)
    out = Path(out)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=20))
    result: dict = {}
    try:
        if scenario == "train":
            x = make_data()
            result["elbo"] = _train("elbo", TensorDataset(x), out)
            result["dreg"] = _train("dreg", x, out)
            # resume under torchrun: one epoch, then a second from the checkpoint, equals two
            ckpt = out / "ckpt.pt"
            result["two_epochs"] = _train("elbo", x, out, epochs=2)
            _train("elbo", x, out, epochs=1, checkpoint=ckpt)
            result["resumed"] = _train("elbo", x, out, epochs=2, checkpoint=ckpt, resume=True)
            result["checkpoint_written_by"] = sorted(p.name for p in out.iterdir())
            # ranks that disagree: rank 1 has one row fewer
            try:
                _train("elbo", x if rank == 0 else x[:-1], out)
                result["disagree"] = "no error"
            except Exception as e:  # noqa: BLE001 (recorded for the test)
                result["disagree"] = f"{type(e).__name__}: {e}"
        elif scenario == "faults":
            result = faults(rank, out)
        elif scenario == "diagnostics":
            result = diagnostics()
        elif scenario == "die":
            from pyro_lvm.infer import fit

            vae = make_vae()
            x = make_data()
            if rank == 1:
                fit(vae.model, vae.guide, x, epochs=1, batch_size=BATCH, seed=SEED,
                    progress=False, callbacks=())
                os._exit(3)  # rank 1 dies before the second run's first step
            try:
                fit(vae.model, vae.guide, x, epochs=1, batch_size=BATCH, seed=SEED,
                    progress=False)
                fit(vae.model, vae.guide, x, epochs=1, batch_size=BATCH, seed=SEED,
                    progress=False)
                result["error"] = "no error"
            except Exception as e:  # noqa: BLE001 (recorded for the test)
                result["error"] = f"{type(e).__name__}: {e}"
    except Exception:  # noqa: BLE001
        result["crash"] = traceback.format_exc()
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    if scenario != "die":
        dist.destroy_process_group()
