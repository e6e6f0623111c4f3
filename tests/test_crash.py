"""A training process killed with SIGKILL leaves a checkpoint that loads and resumes to
exactly the uninterrupted run's parameters (benchmarks/crash_test.py runs more trials)."""

from pathlib import Path

from fixtures import load_script

CRASH = load_script(Path(__file__).parents[1] / "benchmarks" / "crash_test.py")


def test_a_killed_run_resumes_bit_identically_and_leaves_no_temporary_file(tmp_path):
    epochs = 20
    for name in ("reference", "trial"):
        (tmp_path / name).mkdir()
    expected = CRASH.reference(tmp_path / "reference", epochs)
    # killed 0.5 s after its first checkpoint appeared: mid-training on a quiet machine (on
    # a busy one the kill may land after the last epoch, before the process exits)
    found = CRASH.trial(tmp_path / "trial", epochs, kill_after=0.5, expected=expected)
    assert found["killed"] and found["checkpoint"] and 1 <= found["epoch"] <= epochs, found
    assert found["identical"], found
    assert found["tmp left"] == [], found


def test_a_temporary_file_of_a_killed_writer_is_removed_and_files_get_the_usual_mode(tmp_path):
    """kill -9 while a checkpoint is written leaves its temporary file (no cleanup runs):
    the next write of that file removes it. Written files have the mode open() gives (the
    temporary file of mkstemp is 0600)."""
    import os
    import subprocess
    import sys

    import torch

    from pyro_lvm.infer import save_checkpoint

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    orphan = tmp_path / f".c.pt.{int(dead.stdout)}.x1y2z3.tmp"
    orphan.write_bytes(b"half a checkpoint")
    live = tmp_path / f".c.pt.{os.getppid()}.a1b2c3.tmp"  # a writer that still runs
    live.write_bytes(b"being written")
    save_checkpoint({"epoch": 1, "x": torch.zeros(3)}, tmp_path / "c.pt")
    assert not orphan.exists() and live.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_file_that_cannot_be_created_is_named_not_its_temporary_copy(tmp_path, monkeypatch):
    """Before: losing write permission mid-run gave a message naming
    '.checkpoint.pt.<pid>.<random>.tmp', a file the user never asked for."""
    import errno
    import tempfile

    import pytest

    from pyro_lvm.files import atomic_open

    def denied(prefix, suffix, dir):
        raise PermissionError(errno.EACCES, "Permission denied",
                              f"{dir}/{prefix}abc123{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError) as info:
        with atomic_open(tmp_path / "checkpoint.pt"):
            pass
    assert info.value.filename == str(tmp_path / "checkpoint.pt")
    assert "Permission denied" in str(info.value)
