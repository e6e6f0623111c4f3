"""Steps per second of data-parallel fit with W processes against one (same global batch).

    .venv/bin/python benchmarks/scaling.py [--nproc 1 2] [--backend gloo|nccl]
        [--batch-size 512] [--k 1] [--steps 16] [--repeats 3] [--rounds 1] [--threads 1]

For each W in ``--nproc`` the script spawns W processes (``torch.multiprocessing``), each of
which calls ``torch.distributed.init_process_group`` (TCP rendezvous on localhost), sets
``torch.set_num_threads(--threads)``, generates the same random binary data
(``--steps`` x ``--batch-size`` rows of 784 pixels) and the same VAE 784-200-200-50 (Bernoulli),
and runs ``pyro_lvm.infer.fit`` for 1 + ``--repeats`` epochs of ``--steps`` steps each, with
Trace_ELBO (``--k 1``) or ``IWAE(K)``. The first epoch is the warm-up (first-call costs, the
vectorization check of IWAE); rank 0 reports the median time of the others (fit's own
per-epoch clock, which includes waiting on the all-reduce). ``--batch-size`` is the GLOBAL
batch size: with W processes each computes 1/W of every minibatch, so the ideal speed-up of
steps/s is W, and the parallel efficiency printed is (steps/s at W) / (W x steps/s at 1).

``--backend nccl`` runs one GPU per rank (``device="cuda:{rank}"``); gloo runs on CPUs.
W = 1 runs the plain single-process path (a group of one process is not distributed).
``--rounds`` repeats the whole comparison, in a rotating order of W, and also prints the
median of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile

import torch
import torch.multiprocessing as mp

DATA_DIM = 784


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world_size: int, cfg: dict, out_path: str) -> None:
    import pyro
    import torch.distributed as dist
    from pyro.infer import Trace_ELBO

    from pyro_lvm.infer import IWAE, fit
    from pyro_lvm.models import VAE

    torch.set_num_threads(cfg["threads"])
    device = "cpu"
    if cfg["backend"] == "nccl":
        device = f"cuda:{rank}"
        torch.cuda.set_device(rank)
    dist.init_process_group(cfg["backend"], init_method=f"tcp://127.0.0.1:{cfg['port']}",
                            rank=rank, world_size=world_size)
    try:
        rows = cfg["steps"] * cfg["batch_size"]
        data = (torch.rand(rows, DATA_DIM, generator=torch.Generator().manual_seed(0))
                < 0.3).float()
        pyro.clear_param_store()
        torch.manual_seed(0)  # the same initial parameters on every rank (fit checks it)
        vae = VAE(DATA_DIM, 50, hidden=(200, 200))
        loss = Trace_ELBO() if cfg["k"] == 1 else IWAE(cfg["k"])
        history = fit(vae.model, vae.guide, data, loss=loss,
                      optimizer=pyro.optim.Adam({"lr": 1e-3}), epochs=1 + cfg["repeats"],
                      batch_size=cfg["batch_size"], seed=0, progress=False, device=device)
        if rank == 0:
            timed = history.epoch_time[1:]
            with open(out_path, "w") as f:
                json.dump({"epoch_time": history.epoch_time, "steps": cfg["steps"],
                           "steps_per_s": cfg["steps"] / statistics.median(timed),
                           "loss": history.train_loss[-1]}, f)
    finally:
        dist.destroy_process_group()


def measure(world_size: int, cfg: dict) -> dict:
    cfg = dict(cfg, port=free_port())
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "rank0.json")
        mp.spawn(worker, args=(world_size, cfg, out_path), nprocs=world_size, join=True)
        with open(out_path) as f:
            return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    parser.add_argument("--batch-size", type=int, default=512, help="global batch size")
    parser.add_argument("--k", type=int, default=1, help="1: Trace_ELBO; K > 1: IWAE(K)")
    parser.add_argument("--steps", type=int, default=16, help="steps per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs after a warm-up")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()
    if args.backend == "nccl" and torch.cuda.device_count() < max(args.nproc):
        raise SystemExit(f"--backend nccl needs {max(args.nproc)} GPUs, "
                         f"found {torch.cuda.device_count()}")
    nproc = sorted(set(args.nproc))
    if 1 not in nproc:
        nproc.insert(0, 1)  # the baseline of the efficiency
    cfg = {"backend": args.backend, "batch_size": args.batch_size, "k": args.k,
           "steps": args.steps, "repeats": args.repeats, "threads": args.threads}
    objective = "Trace_ELBO" if args.k == 1 else f"IWAE({args.k})"
    print(f"VAE 784-200-200-50, {objective}, global batch {args.batch_size}, {args.backend}, "
          f"{args.threads} thread(s) per process; {args.steps} steps per epoch, median of "
          f"{args.repeats} epochs after 1 warm-up epoch")
    print(f"{'round':>5} {'W':>3} {'steps/s':>8} {'ms/step':>8} {'speed-up':>8} "
          f"{'efficiency':>10} {'last loss':>10}")
    rates: dict[int, list[float]] = {w: [] for w in nproc}
    for r in range(args.rounds):
        order = nproc[r % len(nproc):] + nproc[:r % len(nproc)]
        results = {w: measure(w, cfg) for w in order}
        base = results[1]["steps_per_s"]
        for w in nproc:
            rate = results[w]["steps_per_s"]
            rates[w].append(rate)
            print(f"{r + 1:>5} {w:>3} {rate:>8.2f} {1e3 / rate:>8.1f} {rate / base:>8.2f} "
                  f"{rate / (w * base):>10.2f} {results[w]['loss']:>10.4f}", flush=True)
    if args.rounds > 1:
        base = statistics.median(rates[1])
        for w in nproc:
            rate = statistics.median(rates[w])
            print(f"{'med':>5} {w:>3} {rate:>8.2f} {1e3 / rate:>8.1f} {rate / base:>8.2f} "
                  f"{rate / (w * base):>10.2f}")


if __name__ == "__main__":
    main()
