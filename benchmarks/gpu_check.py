"""Run every path of pyro_lvm on a CUDA device, each timed against the same call on the CPU.

    .venv/bin/python benchmarks/gpu_check.py [--device cuda] [--batch-size 100] [--steps 10]
        [--repeats 2] [--threads N]

Without CUDA it prints "no CUDA device: nothing to check" and exits 0. ``--device cpu`` runs
the same checks with the CPU on both sides (a dry run of this script's logic on a machine
without a GPU; its ratios are about 1).

On each device in turn (the CPU first), with the same data (generated on the CPU from fixed
seeds and moved), it builds PPCA(20, 5) and the VAE 784-200-200-50 (Bernoulli) on the device
and calls, in order: ``fit`` with Trace_ELBO (PPCA, VAE) and with ``IWAE(8,
estimator="dreg")`` (the VAE, continued), ``fit`` on a CPU-held map-style Dataset with
``device=...`` (streamed and moved batch by batch), ``evaluate_loss`` (a tensor on the device,
and a CPU Dataset), ``diagnostics.log_likelihood`` (the same two), ``information``,
``AggregatePosterior.from_guide`` (and ``log_prob`` at its own draws), ``bayes_loop`` (PPCA),
``snr_versus_particles`` (DReG, K = 1 and 8), the results' ``summary``/``as_dict``, and the
figures of ``pyro_lvm.diagnostics.plots`` on those results (and ``History.plot``). One row per
path: CPU seconds, device seconds, their ratio, and a number from each side's result (which
agree up to Monte Carlo noise: the two devices draw different random numbers). A path that
raises is reported as FAILED with the error, the others still run, and the exit status is 1.

Then the step time of ``fit`` for the VAE at K = 1 (Trace_ELBO) and K = 64 (``IWAE(64)``),
``--batch-size`` rows per step, ``--steps`` steps per epoch, the median of ``--repeats``
epochs after a warm-up epoch, CPU against the device.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch.utils.data import TensorDataset

from pyro_lvm.diagnostics import (
    AggregatePosterior,
    bayes_loop,
    information,
    log_likelihood,
    sample_prior,
    snr_versus_particles,
)
from pyro_lvm.diagnostics import plots as P
from pyro_lvm.infer import IWAE, evaluate_loss, fit
from pyro_lvm.models import PPCA, VAE


class Skipped(Exception):
    """A path whose input (an earlier path's result) is missing."""


def need(state: dict, *keys: str):
    missing = [k for k in keys if k not in state]
    if missing:
        raise Skipped(f"needs {missing[0]!r}, which an earlier path did not produce")
    return [state[k] for k in keys]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def on_device(module: torch.nn.Module, device: torch.device) -> str:
    where = {p.device for p in module.parameters()}
    if where != {device}:
        raise AssertionError(f"parameters on {sorted(map(str, where))}, expected {device}")
    return ""


def adam(lr: float = 1e-3):
    return pyro.optim.Adam({"lr": lr})


def make_data() -> dict:
    """The same data for both devices, on the CPU."""
    torch.manual_seed(0)
    truth = PPCA(20, 5)
    with torch.no_grad():
        x_ppca = truth.sample(2000)
    x_vae = (torch.rand(2048, 784, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    return {"x_ppca": x_ppca, "x_vae": x_vae}


# -- the paths: f(state, device) -> a number (or text) from the result --------------------------
def ppca_fit(s, dev):
    torch.manual_seed(0)
    ppca = PPCA(20, 5).to(dev)
    h = fit(ppca.model, ppca.guide, s["x_ppca"].to(dev), optimizer=adam(0.05), epochs=5,
            batch_size=200, seed=0, progress=False)
    on_device(ppca, dev)
    s["ppca"] = ppca
    return h.train_loss[-1]


def vae_fit_elbo(s, dev):
    torch.manual_seed(0)
    vae = VAE(784, 50, hidden=(200, 200)).to(dev)
    h = fit(vae.model, vae.guide, s["x_vae"].to(dev), loss=Trace_ELBO(), optimizer=adam(),
            epochs=2, batch_size=128, seed=0, progress=False)
    on_device(vae, dev)
    s["vae"], s["history"] = vae, h
    return h.train_loss[-1]


def vae_fit_dreg(s, dev):
    (vae,) = need(s, "vae")
    h = fit(vae.model, vae.guide, s["x_vae"].to(dev), loss=IWAE(8, estimator="dreg"),
            optimizer=adam(), epochs=1, batch_size=128, seed=1, progress=False)
    on_device(vae, dev)
    return h.train_loss[-1]


def vae_fit_dataset(s, dev):
    torch.manual_seed(0)
    vae = VAE(784, 50, hidden=(200, 200), name="vae_streamed")
    h = fit(vae.model, vae.guide, TensorDataset(s["x_vae"]), loss=Trace_ELBO(),
            optimizer=adam(), epochs=1, batch_size=128, seed=0, progress=False, device=dev)
    on_device(vae, dev)
    return h.train_loss[-1]


def eval_loss_tensor(s, dev):
    (vae,) = need(s, "vae")
    return evaluate_loss(vae.model, vae.guide, s["x_vae"].to(dev), loss=IWAE(8), seed=0)


def eval_loss_dataset(s, dev):
    (vae,) = need(s, "vae")
    return evaluate_loss(vae.model, vae.guide, TensorDataset(s["x_vae"]), seed=0)


def loglik_tensor(s, dev):
    (vae,) = need(s, "vae")
    ev = log_likelihood(vae.model, vae.guide, s["x_vae"][:256].to(dev), num_particles=1000)
    s["evidence"] = ev
    return ev.summary()["mean_log_px"]  # summary() mixes log_px, ess and k-hat


def loglik_dataset(s, dev):
    (vae,) = need(s, "vae")
    ev = log_likelihood(vae.model, vae.guide, TensorDataset(s["x_vae"][:256]),
                        num_particles=200)
    return ev.summary()["mean_log_px"]


def info(s, dev):
    (vae,) = need(s, "vae")
    result = information(vae.model, vae.guide, s["x_vae"][:1024].to(dev))
    s["information"] = result
    return result.as_dict()["mutual_information"]["value"]


def aggregate(s, dev):
    (vae,) = need(s, "vae")
    q = AggregatePosterior.from_guide(vae.guide, s["x_vae"].to(dev))
    s["aggregate"] = q
    return float(q.log_prob(q.sample(1024, generator=torch.Generator().manual_seed(0))
                            ).mean())


def bayes(s, dev):
    (ppca,) = need(s, "ppca")
    result = bayes_loop(ppca.model, ppca.guide, s["x_ppca"][:1000].to(dev))
    s["bayes_loop"] = result
    result.summary()
    return result.p_value


def snr(s, dev):
    (vae,) = need(s, "vae")
    result = snr_versus_particles(vae.model, vae.guide, s["x_vae"][:128].to(dev),
                                  lambda k: IWAE(k, estimator="dreg"), [1, 8], num_samples=10)
    s["snr"] = result
    return result["snr"]["guide"][-1]


def figure(fig) -> str:
    return f"{len(fig.axes)} axes"


def plot_evidence(s, dev):
    (ev,) = need(s, "evidence")
    return figure(P.plot_evidence_diagnostics(ev))


def plot_kl(s, dev):
    (result,) = need(s, "information")
    return figure(P.plot_kl_per_dim(result))


def plot_aggregate(s, dev):
    vae, q = need(s, "vae", "aggregate")
    x = s["x_vae"][:2000].to(dev)
    return figure(P.plot_aggregate_vs_prior(q.sample(2000), sample_prior(vae.model, x, q.blocks)))


def plot_bayes(s, dev):
    (result,) = need(s, "bayes_loop")
    return figure(P.plot_bayes_loop(result))


def plot_snr(s, dev):
    (result,) = need(s, "snr")
    return figure(P.plot_snr_versus_particles({"DReG": result}))


def plot_features(s, dev):
    (vae,) = need(s, "vae")
    last = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    return figure(P.plot_features(last.weight.detach().T[:32], (28, 28)))


def plot_history(s, dev):
    (h,) = need(s, "history")
    h.plot()
    return "drawn"


PATHS = [
    ("fit PPCA, Trace_ELBO", ppca_fit),
    ("fit VAE, Trace_ELBO", vae_fit_elbo),
    ("fit VAE, IWAE(8, dreg)", vae_fit_dreg),
    ("fit VAE, CPU Dataset, device=", vae_fit_dataset),
    ("evaluate_loss, tensor, IWAE(8)", eval_loss_tensor),
    ("evaluate_loss, CPU Dataset", eval_loss_dataset),
    ("log_likelihood, tensor, S=1000", loglik_tensor),
    ("log_likelihood, CPU Dataset", loglik_dataset),
    ("information", info),
    ("AggregatePosterior.from_guide", aggregate),
    ("bayes_loop (PPCA)", bayes),
    ("snr_versus_particles (DReG)", snr),
    ("plot_evidence_diagnostics", plot_evidence),
    ("plot_kl_per_dim", plot_kl),
    ("plot_aggregate_vs_prior", plot_aggregate),
    ("plot_bayes_loop", plot_bayes),
    ("plot_snr_versus_particles", plot_snr),
    ("plot_features (decoder)", plot_features),
    ("History.plot", plot_history),
]


def run_paths(device: torch.device, data: dict) -> dict[str, tuple[float | None, str]]:
    pyro.clear_param_store()
    state = dict(data)
    out = {}
    for name, fn in PATHS:
        synchronize(device)
        t0 = time.perf_counter()
        try:
            value = fn(state, device)
            synchronize(device)
        except Skipped as e:
            out[name] = (None, f"skipped: {e}")
            continue
        except Exception as e:  # noqa: BLE001 (every failure is reported, the rest still run)
            first = (str(e).strip().splitlines() or [""])[0][:160]
            out[name] = (None, f"FAILED: {type(e).__name__}: {first}")
            traceback.print_exc(file=sys.stderr)
            continue
        seconds = time.perf_counter() - t0
        out[name] = (seconds, f"{value:.4g}" if isinstance(value, float) else str(value))
    return out


def warm_up(device: torch.device) -> None:
    """First-call costs (CUDA context, cuBLAS handles, Pyro's first trace) outside the timings."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(784, 50, hidden=(200, 200), name="warm_up").to(device)
    x = (torch.rand(256, 784) < 0.3).float().to(device)
    fit(vae.model, vae.guide, x, epochs=1, batch_size=128, progress=False)
    synchronize(device)


def step_time(device: torch.device, k: int, batch: int, steps: int, repeats: int) -> float:
    """ms per fit step of the VAE 784-200-200-50 (median epoch after a warm-up epoch)."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(784, 50, hidden=(200, 200)).to(device)
    x = (torch.rand(steps * batch, 784, generator=torch.Generator().manual_seed(0)) < 0.3
         ).float().to(device)
    loss = Trace_ELBO() if k == 1 else IWAE(k)
    h = fit(vae.model, vae.guide, x, loss=loss, optimizer=adam(), epochs=1 + repeats,
            batch_size=batch, seed=0, progress=False)
    return 1e3 * statistics.median(h.epoch_time[1:]) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None,
                        help="default: cuda when available; cpu: a dry run, CPU against CPU")
    parser.add_argument("--batch-size", type=int, default=100, help="rows per step (step time)")
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch (step time)")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs (step time)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.device is None and device.type == "cpu" or (device.type == "cuda"
                                                         and not torch.cuda.is_available()):
        print("no CUDA device: nothing to check")
        return 0
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    print(f"device {device} ({name}) against cpu ({torch.get_num_threads()} threads); "
          f"torch {torch.__version__}, pyro {pyro.__version__}")

    data = make_data()
    warm_up(cpu)
    on_cpu = run_paths(cpu, data)
    warm_up(device)
    on_dev = run_paths(device, data)

    failed = 0
    width = max(len(n) for n, _ in PATHS)
    print(f"\n{'path':<{width}} {'CPU s':>8} {'device s':>8} {'CPU/dev':>8}  "
          "result on CPU | on device")
    for path, _ in PATHS:
        (t_cpu, v_cpu), (t_dev, v_dev) = on_cpu[path], on_dev[path]
        failed += v_cpu.startswith(("FAILED", "skipped")) + v_dev.startswith(("FAILED",
                                                                            "skipped"))
        ratio = f"{t_cpu / t_dev:8.2f}" if t_cpu and t_dev else f"{'-':>8}"
        show = lambda t: f"{t:8.3f}" if t is not None else f"{'-':>8}"  # noqa: E731
        print(f"{path:<{width}} {show(t_cpu)} {show(t_dev)} {ratio}  {v_cpu} | {v_dev}")

    print(f"\nfit step time, VAE 784-200-200-50, batch {args.batch_size}, median of "
          f"{args.repeats} epochs of {args.steps} steps after a warm-up epoch")
    print(f"{'objective':<12} {'CPU ms':>8} {'device ms':>9} {'CPU/dev':>8}")
    for k in (1, 64):
        ms_cpu = step_time(cpu, k, args.batch_size, args.steps, args.repeats)
        ms_dev = step_time(device, k, args.batch_size, args.steps, args.repeats)
        label = "Trace_ELBO" if k == 1 else f"IWAE({k})"
        print(f"{label:<12} {ms_cpu:>8.1f} {ms_dev:>9.1f} {ms_cpu / ms_dev:>8.2f}")
    if failed:
        print(f"\n{failed} path(s) failed or were skipped (tracebacks above, on stderr)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
