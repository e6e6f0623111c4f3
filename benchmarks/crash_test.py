"""Kill a training process at random moments (SIGKILL: no cleanup runs) and check what it
leaves: the checkpoint on disk always loads, the run resumed from it ends with exactly the
parameters of an uninterrupted run, and no temporary file is left behind once it has.

Each trial starts ``fit`` of a small VAE with a checkpoint every epoch in a fresh process,
kills it after a random time (some kills land while a checkpoint is being written), then
resumes it to the end in another process and compares the final parameters bitwise with a
reference run. ``tests/test_crash.py`` runs one trial; this script runs more.

    .venv/bin/python benchmarks/crash_test.py [--trials 20] [--seed 0]
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SCRIPT = '''
import sys
import pyro
import torch
from pyro_lvm.infer import fit
from pyro_lvm.models import VAE

torch.set_num_threads(1)
out, resume = sys.argv[1], sys.argv[2] == "resume"
g = torch.Generator().manual_seed(0)
x = (torch.rand(400, 16, generator=g) < 0.3).float()
torch.manual_seed(1)
vae = VAE(16, 3, hidden=(32,))
fit(vae.model, vae.guide, x, optimizer=pyro.optim.Adam({"lr": 0.01}), epochs=EPOCHS,
    batch_size=20, seed=3, checkpoint=out + "/checkpoint.pt", resume=resume, progress=False)
torch.save({k: v.detach() for k, v in pyro.get_param_store().named_parameters()},
           out + "/final.pt")
'''


def run(directory: Path, epochs: int, resume: bool, kill_after: float | None = None):
    """Run the script in a fresh process; with ``kill_after``, SIGKILL it that many seconds
    after its first checkpoint appears. Returns whether it finished by itself."""
    script = directory / "train.py"
    script.write_text(SCRIPT.replace("EPOCHS", str(epochs)))
    process = subprocess.Popen([sys.executable, str(script), str(directory),
                                "resume" if resume else "fresh"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is None:
        _, err = process.communicate(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"training failed: {err.decode()[-2000:]}")
        return True
    checkpoint = directory / "checkpoint.pt"
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.01)
    try:
        process.wait(timeout=kill_after)
        return True
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return False


def reference(directory: Path, epochs: int) -> dict:
    """The final parameters of an uninterrupted run."""
    run(directory, epochs, resume=False)
    return torch.load(directory / "final.pt", weights_only=True)


def trial(directory: Path, epochs: int, kill_after: float, expected: dict) -> dict:
    """One kill and one resume. Returns what was found: whether the kill landed before the
    end, whether a checkpoint was on disk and loaded, whether the resumed run's parameters
    equal ``expected`` bitwise, and the temporary files left over."""
    from pyro_lvm.infer import load_checkpoint

    killed = not run(directory, epochs, resume=False, kill_after=kill_after)
    found = {"killed": killed, "checkpoint": (directory / "checkpoint.pt").exists()}
    if found["checkpoint"]:
        found["epoch"] = int(load_checkpoint(directory / "checkpoint.pt")["epoch"])
    found["tmp after kill"] = sorted(p.name for p in directory.glob(".*.tmp"))
    (directory / "final.pt").unlink(missing_ok=True)
    run(directory, epochs, resume=True)
    final = torch.load(directory / "final.pt", weights_only=True)
    found["identical"] = final.keys() == expected.keys() and all(
        torch.equal(final[k], expected[k]) for k in expected)
    found["tmp left"] = sorted(p.name for p in directory.glob(".*.tmp"))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        expected = reference(Path(root), args.epochs)
        full = time.perf_counter() - t  # start-up included: kills land across the training
        counts = {"trials": 0, "killed": 0, "with checkpoint": 0, "identical": 0,
                  "tmp after kill": 0, "tmp left": 0}
        for i in range(args.trials):
            directory = Path(root) / f"trial{i}"
            directory.mkdir()
            found = trial(directory, args.epochs, rng.uniform(0.0, 0.7 * full), expected)
            counts["trials"] += 1
            counts["killed"] += found["killed"]
            counts["with checkpoint"] += found["checkpoint"]
            counts["identical"] += found["identical"]
            counts["tmp after kill"] += bool(found["tmp after kill"])
            counts["tmp left"] += bool(found["tmp left"])
            print(f"trial {i + 1}: {found}", flush=True)
    print(f"uninterrupted run {full:.1f} s; " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
