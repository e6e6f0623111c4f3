"""Data-parallel fit on 2 gloo processes (spawned on CPU) against one process over the same
global minibatches and the same random draws; resume, disagreement and a dying rank."""

import json
import math

import distributed_workers as w
import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")


def _spawn(tmp_path, scenario: str, world: int = 2) -> list[dict]:
    out = tmp_path / scenario
    out.mkdir(parents=True)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=w.worker, args=(r, world, str(out.parent / f"{scenario}.store"),
                                                str(out), scenario)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        if p.is_alive():
            p.kill()
    return [json.loads(f.read_text()) if (f := out / f"rank{r}.json").exists() else {}
            for r in range(world)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _spawn(tmp_path_factory.mktemp("dist"), "train")


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(max(abs(x - y) for x, y in zip(a[k], b[k], strict=True)) for k in a)


@pytest.mark.parametrize("kind", ["elbo", "dreg"])
def test_two_processes_equal_one_over_the_same_global_minibatches(trained, kind):
    for r in trained:
        assert "crash" not in r, r.get("crash")
    rank0, rank1 = (r[kind] for r in trained)
    assert _max_diff(rank0["params"], rank1["params"]) == 0  # one model on every rank
    assert rank0["train_loss"] == rank1["train_loss"] and rank0["val"] == rank1["val"]
    reference = w.reference(kind, world=2)
    assert _max_diff(rank0["params"], reference) < 1e-5
    # ... and the check has power: one process's own draws give other parameters
    assert _max_diff(rank0["params"], w.reference(kind, world=1)) > 1e-4


def test_resume_under_two_processes_is_identical_and_only_rank_0_writes(trained):
    for r in trained:
        assert r["resumed"]["params"] == r["two_epochs"]["params"]
        assert r["resumed"]["train_loss"] == r["two_epochs"]["train_loss"]
    assert trained[0]["checkpoint_written_by"] == ["ckpt.pt"]


def test_ranks_that_disagree_get_one_clear_error_on_every_rank(trained):
    for r in trained:
        text = r["disagree"]
        assert text.startswith("DistributedError: fit: the 2 processes disagree on the number "
                               "of rows (rank 0: 64, rank 1: 63)"), text


def test_a_dying_rank_stops_the_others_with_a_message(tmp_path):
    rank0 = _spawn(tmp_path, "die")[0]
    assert rank0["error"].startswith("DistributedError: fit:"), rank0["error"]
    assert "failed on rank 0" in rank0["error"] and "rank 1 stopped answering" in rank0["error"]
    assert "resume" in rank0["error"]


def test_sharded_diagnostics_equal_the_single_process_group_on_the_same_draws(tmp_path):
    """log_likelihood, information, bayes_loop, evaluate_loss and inference_gaps: each rank
    computes every W-th chunk, seeded by the chunk's index, and the results are gathered;
    with 1 and with 2 processes every number agrees (the draws depend on the chunk, not on
    the rank)."""
    one = _spawn(tmp_path / "w1", "diagnostics", world=1)[0]
    two = _spawn(tmp_path / "w2", "diagnostics", world=2)
    assert two[0] == two[1]  # every rank returns the whole result
    for key, value in one.items():
        got = two[0][key]
        if isinstance(value, list):
            assert torch.allclose(torch.tensor(got, dtype=torch.float64),
                                  torch.tensor(value, dtype=torch.float64),
                                  rtol=0, atol=1e-6), key
        else:
            assert abs(got - value) <= 1e-6, (key, got, value)


def test_faults_stop_every_rank_with_a_clear_message(tmp_path):
    """Found in review: each case used to hang, or to give a silently wrong number."""
    ranks = _spawn(tmp_path, "faults")
    for r in ranks:
        assert "crash" not in r, r.get("crash")
        # a model without the data plate: every term was divided by W, silently
        assert "no such plate was found" in r["no plate, full batch"]
        assert "disagree on the data (a fingerprint)" in r["other rows"]
        assert "RenyiELBO is biased under minibatches and across processes" in r["renyi"]
        assert "disagree on checkpointing" in r["checkpoint on one rank"]
    # one rank's bad row stops both: its own error there, named by rank on the other (row 1
    # is read by rank 1 in the look before the first step: rows 1, 3, ... of the first batch)
    assert "data: row 1 contains non-finite values" in ranks[1]["nan row"]
    assert ranks[0]["nan row"].startswith("DistributedError: fit failed on rank 1: "
                                          "ValueError: data: row 1 contains non-finite")
    # a last global batch of 1 row on 2 processes: it runs, the same everywhere, and a
    # callback that calls a sharded diagnostic on every rank does not hang
    a, b = (r["ragged below W"] for r in ranks)
    assert a == b and a["steps"] == 5 and len(a["callback"]) == 1


def test_a_distributed_train_loss_is_the_single_process_estimate(trained):
    """The history's loss is the sum over ranks: finite and of the size of one process's."""
    assert all(math.isfinite(v) for v in trained[0]["elbo"]["train_loss"])


def test_the_readme_scaling_example_runs_under_torchrun(tmp_path):
    """The README's script, unchanged, on 2 processes launched by torchrun."""
    import subprocess
    import sys

    from test_readme import EXAMPLES, unmatched

    source, expected = next((s, e) for s, e in EXAMPLES if "init_process_group" in s)
    script = tmp_path / "script.py"
    script.write_text(source)
    def launch():
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc_per_node=2", str(script)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    done = launch()
    if done.returncode != 0 and "terminate called without an active exception" in done.stderr \
            and not unmatched(expected, done.stdout):
        # Once in about a dozen runs on 2 busy cores, a rank aborted *after* the script had
        # finished and destroyed its process group (a C++ thread of gloo's teardown, not
        # reproduced in 10 reruns; pytorch/pytorch#190489 has the same message). The run's
        # output was complete; a second launch tells that apart from a real failure.
        done = launch()
    assert done.returncode == 0, done.stderr[-3000:]
    assert not unmatched(expected, done.stdout), done.stdout
    assert done.stdout.count("log p(x) of 256 rows") == 1  # rank 0 prints, rank 1 does not
