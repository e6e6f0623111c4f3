"""Peak memory of one epoch of fit on a streamed data set of N rows, against N.

    .venv/bin/python benchmarks/streaming_memory.py [--sizes 50000 200000] [--batch-size 256]
        [--epochs 1] [--threads 1] [--tensor]

The data set is a map-style ``torch.utils.data.Dataset`` whose rows (784 binary pixels) are
computed from the row index inside ``__getitems__`` (a cheap integer hash): nothing of size
N is ever held, so ``fit`` (which reads it minibatch by minibatch, :mod:`pyro_lvm.rows`)
should need the same memory for every N. Each N runs in a fresh interpreter, so that the
peak resident set size (``ru_maxrss``) is that run's alone: the child records the peak right
after imports and model construction (the baseline) and again after ``fit`` (VAE
784-200-200-50, Bernoulli, Trace_ELBO, Adam). The parent prints the increase of the peak per
N and the ratio of the largest N's increase to the smallest N's (about 1 when memory does
not grow with N), with what the same rows would take as a float32 tensor for contrast.
``--tensor`` also runs each N with the rows materialized as one tensor (the contrast
measured rather than computed).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

MIB = 2**20
DATA_DIM = 784


def maxrss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (MIB if sys.platform == "darwin" else 1024)


def child(num_rows: int, batch_size: int, epochs: int, threads: int, tensor: bool) -> None:
    import pyro
    import torch
    from torch.utils.data import Dataset

    from pyro_lvm.infer import fit
    from pyro_lvm.models import VAE

    torch.set_num_threads(threads)
    columns = torch.arange(DATA_DIM, dtype=torch.int64)

    class HashedPixels(Dataset):
        """Row i: pixel j is 1 when a hash of (i, j) falls in the lowest 30% of its range.
        Deterministic, O(batch) memory, about 10 µs a row."""

        def __len__(self):
            return num_rows

        def _rows(self, idx: torch.Tensor) -> torch.Tensor:
            h = (idx[:, None] * 0x9E3779B1 + columns * 0x85EBCA77) & 0xFFFFFFFF
            h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
            h = h ^ (h >> 13)
            return ((h & 0x3FF) < 307).to(torch.float32)

        def __getitem__(self, i):
            return self._rows(torch.tensor([int(i)]))[0]

        def __getitems__(self, indices):
            return list(self._rows(torch.as_tensor(indices, dtype=torch.int64)).unbind(0))

    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE(DATA_DIM, 50, hidden=(200, 200))
    baseline = maxrss_mib()
    data = HashedPixels()
    if tensor:  # the same rows, held: written chunk by chunk into one float32 tensor
        held = torch.empty(num_rows, DATA_DIM)
        for start in range(0, num_rows, 4096):
            idx = torch.arange(start, min(start + 4096, num_rows))
            held[start:start + len(idx)] = data._rows(idx)
        data = held
    t0 = time.perf_counter()
    history = fit(vae.model, vae.guide, data, optimizer=pyro.optim.Adam({"lr": 1e-3}),
                  epochs=epochs, batch_size=batch_size, seed=0, progress=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({"n": num_rows, "baseline": baseline, "peak": maxrss_mib(),
                      "seconds": seconds, "steps": history.num_steps,
                      "loss": history.train_loss[-1]}))


def run_child(num_rows: int, args, tensor: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(num_rows), "--batch-size",
           str(args.batch_size), "--epochs", str(args.epochs), "--threads", str(args.threads)]
    if tensor:
        cmd.append("--tensor")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tensor", action="store_true",
                        help="also run each N with the rows held as one in-memory tensor")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.batch_size, args.epochs, args.threads, args.tensor)
        return

    kinds = [("streamed", False)] + ([("tensor", True)] if args.tensor else [])
    print(f"VAE 784-200-200-50, Trace_ELBO, batch {args.batch_size}, {args.epochs} epoch(s), "
          f"{args.threads} thread(s); one fresh process per row")
    print(f"{'data':>8} {'N':>8} {'baseline MiB':>12} {'peak MiB':>9} {'increase MiB':>12} "
          f"{'seconds':>8} {'steps/s':>8} {'float32 tensor MiB':>18}")
    increases: dict[str, dict[int, float]] = {}
    for kind, tensor in kinds:
        for n in args.sizes:
            r = run_child(n, args, tensor)
            increase = r["peak"] - r["baseline"]
            increases.setdefault(kind, {})[n] = increase
            print(f"{kind:>8} {n:>8} {r['baseline']:>12.1f} {r['peak']:>9.1f} {increase:>12.1f} "
                  f"{r['seconds']:>8.1f} {r['steps'] / r['seconds']:>8.1f} "
                  f"{n * DATA_DIM * 4 / MIB:>18.1f}", flush=True)
    lo, hi = min(args.sizes), max(args.sizes)
    for kind, inc in increases.items():
        if lo != hi:
            print(f"{kind}: increase at N={hi} / increase at N={lo} = {inc[hi] / inc[lo]:.2f} "
                  f"(N ratio {hi / lo:g}; about 1 means memory independent of N)")


if __name__ == "__main__":
    main()
