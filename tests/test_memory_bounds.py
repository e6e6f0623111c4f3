"""bayes_loop and information hold a chunk of rows at a time, not all N (issue 17, item 6).

The largest block each one builds is recorded through the function that builds it, and the
chunked results are compared with the unchunked ones. benchmarks/diagnostics_memory.py
measures the peak resident memory itself.
"""

import importlib
import weakref

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_lvm.diagnostics import bayes_loop, information
from pyro_lvm.models import PPCA

bl_module = importlib.import_module("pyro_lvm.diagnostics.bayes_loop")
agg_module = importlib.import_module("pyro_lvm.diagnostics.aggregate")

DIM = 6


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(DIM), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 0.7).to_event(1), obs=x)


def guide(x):  # the exact posterior, coordinate by coordinate
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x / 1.49, 0.7 / 1.49**0.5).to_event(1))


@pytest.fixture
def recorded_draws(monkeypatch):
    """Replace the guide's draws by a function of (x_n, l) alone, so that every chunking
    gives the same draws, and record the rows of each (L, rows, D) block."""
    rows = []

    def fake(guide, x, names, num_samples, nesting, data_plate, vectorized):
        rows.append(x.shape[0])
        phase = torch.arange(num_samples, dtype=x.dtype)[:, None, None]
        return (torch.sin(7.3 * x[None] + 1.7 * phase) * 2).round(decimals=1)  # ties too

    monkeypatch.setattr(bl_module, "_posterior_draws", fake)
    return rows


def test_bayes_loop_chunked_equals_unchunked_and_holds_one_chunk(recorded_draws):
    data = torch.zeros(200, DIM)
    whole = bayes_loop(model, guide, data, num_posterior_samples=19, chunk_size=200)
    assert recorded_draws == [200]
    recorded_draws.clear()
    chunked = bayes_loop(model, guide, data, num_posterior_samples=19, chunk_size=32)
    assert max(recorded_draws) == 32 and sum(recorded_draws) == 200
    np.testing.assert_array_equal(chunked.ranks, whole.ranks)  # ties broken the same way
    np.testing.assert_array_equal(chunked.chi2_p, whole.chi2_p)
    np.testing.assert_array_equal(chunked.ks_p, whole.ks_p)
    assert torch.equal(chunked.posterior_draws, whole.posterior_draws)
    assert chunked.p_value == whole.p_value


def test_bayes_loop_keeps_no_chunk_of_draws(recorded_draws, monkeypatch):
    """Every (L, rows, D) block is freed once its chunk is done: a view of its first draw
    kept for the result would hold the whole block (the N-growth of the first fix)."""
    blocks, alive = [], []
    fake = bl_module._posterior_draws

    def tracked(*args):
        out = fake(*args)
        blocks.append(weakref.ref(out))
        return out

    def chunks(*args, **kwargs):
        out = original(*args, **kwargs)
        alive.append(sum(ref() is not None for ref in blocks))
        return out

    original = bl_module.map_chunks
    monkeypatch.setattr(bl_module, "_posterior_draws", tracked)
    monkeypatch.setattr(bl_module, "map_chunks", chunks)
    bayes_loop(model, guide, torch.zeros(100, DIM), num_posterior_samples=19, chunk_size=10)
    assert len(blocks) == 10 and alive == [0]


def test_bayes_loop_default_chunk_is_fixed_by_a_memory_budget_not_by_n(recorded_draws):
    sizes = {}
    for n in (400, 1200):
        recorded_draws.clear()
        bayes_loop(model, guide, torch.zeros(n, DIM), num_posterior_samples=99,
                   num_permutations=10, max_test_points=100)
        sizes[n] = max(recorded_draws)
    expected = bl_module.DRAW_BUDGET // (99 * DIM * 4)   # 32 MiB of float32 draws
    assert sizes == {400: 400, 1200: min(1200, expected)}
    # the same budget at latent dim 512: 165 rows of (99, rows, 512) draws at once
    assert bl_module._chunk_rows(None, 99, torch.zeros(8000, 512)) == 165


def test_bayes_loop_small_chunks_still_pass_the_exact_posterior():
    """Real draws: other chunkings draw other numbers of the same distribution."""
    ppca = PPCA(4, 2)
    passed = [bayes_loop(ppca.model, ppca.exact_posterior, torch.zeros(300, 4), seed=s,
                         chunk_size=37, num_permutations=50).passed for s in range(5)]
    assert sum(passed) >= 4


@pytest.fixture
def recorded_blocks(monkeypatch):
    """The number of values in each (points, components, ...) block of q(z)'s mixtures."""
    sizes = []
    original = agg_module._stream_log_mean_exp

    def stream(pairwise, z, num_components, chunk_size, exclude, prepare=None):
        def recorded(points, rows):
            out = pairwise(points, rows)
            sizes.append(out.numel())
            return out
        return original(recorded, z, num_components, chunk_size, exclude, prepare)

    monkeypatch.setattr(agg_module, "_stream_log_mean_exp", stream)
    return sizes


@pytest.mark.parametrize("estimator", ["plug_in", "leave_one_out"])
def test_information_chunked_equals_unchunked_to_rounding(estimator):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, DIM, generator=g) * 1.22
    whole = information(model, guide, x, num_samples=2, estimator=estimator)
    chunked = information(model, guide, x, num_samples=2, estimator=estimator, chunk_size=16)
    for name in ("rate", "distortion", "mutual_information", "marginal_kl",
                 "total_correlation"):
        a, b = getattr(whole, name), getattr(chunked, name)
        assert a.value == pytest.approx(b.value, rel=1e-5, abs=1e-6), name
        assert a.se == pytest.approx(b.se, rel=1e-4), name
    torch.testing.assert_close(chunked.marginal_kl_per_dim, whole.marginal_kl_per_dim,
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.marginal_kl_per_dim_se, whole.marginal_kl_per_dim_se,
                               rtol=1e-4, atol=1e-7)


def test_information_blocks_do_not_grow_with_n(recorded_blocks):
    largest = {}
    for n in (200, 800):
        recorded_blocks.clear()
        x = torch.randn(n, DIM, generator=torch.Generator().manual_seed(n))
        information(model, guide, x, chunk_size=16)
        largest[n] = max(recorded_blocks)
    assert largest[200] == largest[800] == 16 * 16 * DIM  # the per-coordinate marginals
    # the default at latent dim 512: 128 x 128 x 512 float32 values, 32 MiB
    assert importlib.import_module("pyro_lvm.diagnostics.aggregate").block_chunk(
        None, 512) == 128


def test_the_aggregate_posteriors_default_blocks_are_sized_by_the_latent_dimension(
        recorded_blocks):
    """Before: marginal_log_prob (and a mixture's log_prob) streamed 1024 x 1024 x D blocks
    by default, 2 GiB at D = 512, whoever called them."""
    agg = importlib.import_module("pyro_lvm.diagnostics.aggregate")
    d = 300
    q = agg.DiagonalNormalAggregatePosterior([agg.SiteBlock("z", (d,), 0, d)], 600,
                                             loc=torch.zeros(600, d), scale=torch.ones(600, d))
    q.marginal_log_prob(torch.zeros(500, d))
    assert max(recorded_blocks) * 4 <= agg.BLOCK_BUDGET
    assert max(recorded_blocks) == agg.block_chunk(None, d) ** 2 * d
