"""A training process killed with SIGKILL leaves a checkpoint that loads and resumes to
exactly the uninterrupted run's parameters (benchmarks/crash_test.py runs more trials)."""

from pathlib import Path

from fixtures import load_script

CRASH = load_script(Path(__file__).parents[1] / "benchmarks" / "crash_test.py")


def test_a_killed_run_resumes_bit_identically_and_leaves_no_temporary_file(tmp_path):
    epochs = 12
    for name in ("reference", "trial"):
        (tmp_path / name).mkdir()
    expected = CRASH.reference(tmp_path / "reference", epochs)
    # killed 0.5 s after its first checkpoint appeared: mid-training, with a checkpoint
    found = CRASH.trial(tmp_path / "trial", epochs, kill_after=0.5, expected=expected)
    assert found["killed"] and found["checkpoint"] and 1 <= found["epoch"] < epochs, found
    assert found["identical"], found
    assert found["tmp left"] == [], found
