"""fit and evaluate_loss on a tensor, a map-style Dataset and a DataLoader: the same numbers,
streamed, with a ragged last batch scaled right and bad data sets refused by name."""

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from pyro_lvm.handlers import minibatch
from pyro_lvm.infer import evaluate_loss, fit
from pyro_lvm.models import VAE
from pyro_lvm.rows import DatasetRows, as_rows


def _data(n=53, d=6):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, d, generator=g) < 0.4).float()


class Lazy(Dataset):
    """Rows generated on demand from their index (nothing held in memory), with a label."""

    def __init__(self, x):
        self.x = x
        self.reads = 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i].numpy(), int(i) % 3


def _fit(data, epochs=2, **kwargs):
    pyro.clear_param_store()
    torch.manual_seed(1)
    vae = VAE(6, 2, hidden=(5,))
    h = fit(vae.model, vae.guide, data, optimizer=pyro.optim.Adam({"lr": 0.02}), epochs=epochs,
            seed=4, progress=False, **kwargs)
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    return h, params, vae


@pytest.mark.parametrize("wrap", [
    lambda x: Lazy(x),
    lambda x: TensorDataset(x),
    lambda x: DataLoader(TensorDataset(x), batch_size=10, shuffle=True),
    lambda x: DataLoader(Lazy(x), batch_size=10, num_workers=2),
], ids=["lazy Dataset", "TensorDataset", "DataLoader", "DataLoader with 2 workers"])
def test_a_dataset_or_loader_trains_exactly_as_the_tensor(wrap):
    x = _data()
    h_tensor, p_tensor, _ = _fit(x, batch_size=10)
    h, p, vae = _fit(wrap(x), **({} if isinstance(wrap(x), DataLoader) else {"batch_size": 10}),
                     val_data=wrap(x[:20]))
    assert h.train_loss == h_tensor.train_loss and h.num_steps == 12
    for k in p_tensor:
        torch.testing.assert_close(p[k], p_tensor[k], rtol=0, atol=0)
    assert evaluate_loss(vae.model, vae.guide, wrap(x), batch_size=16) == evaluate_loss(
        vae.model, vae.guide, x, batch_size=16)


def test_a_loaders_batch_size_is_the_default_and_drop_last_is_honoured():
    x = _data()
    h, _, _ = _fit(DataLoader(TensorDataset(x), batch_size=20, drop_last=True), epochs=1)
    assert h.num_steps == 2  # 53 rows: two full batches of 20, the ragged 13 dropped
    h, _, _ = _fit(DataLoader(TensorDataset(x), batch_size=20), epochs=1)
    assert h.num_steps == 3


def test_the_ragged_last_batch_is_scaled_by_n_over_its_own_size():
    """A full-data estimate from every minibatch, the ragged last one included: with a
    deterministic model the step loss of any batch of B rows is N/B times their sum."""
    x = torch.arange(53.0)[:, None]

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, 1.0).expand([1]).to_event(1), obs=x)

    def guide(x):
        pass

    exact = -dist.Normal(0.0, 1.0).log_prob(x[:, 0])
    seen = []

    def record(step_idx):
        batch = x[step_idx]
        with minibatch(step_idx, 53):
            loss = pyro.infer.Trace_ELBO().loss(model, guide, batch)
        seen.append((len(step_idx), loss))

    rows = as_rows(DataLoader(TensorDataset(x), batch_size=20))
    perm = torch.randperm(53, generator=torch.Generator().manual_seed(0))
    for start in range(0, 53, rows.loader_batch_size):
        record(perm[start:start + 20])
    assert [b for b, _ in seen] == [20, 20, 13]
    for (size, loss), start in zip(seen, range(0, 53, 20), strict=True):
        idx = perm[start:start + 20]
        assert loss == pytest.approx(53 / size * float(exact[idx].sum()), rel=1e-6)
    # and fit's epoch loss is the mean of those full-data estimates (its shuffle, seeded 0,
    # is this permutation), per datapoint
    h = fit(model, guide, DataLoader(TensorDataset(x), batch_size=20), epochs=1,
            seed=0, progress=False, optimizer=pyro.optim.Adam({"lr": 0.1}))
    assert h.train_loss[0] == pytest.approx(sum(loss for _, loss in seen) / 3 / 53, rel=1e-6)
    # (a ragged batch scaled by N/B_full instead would be 13/20 of its estimate: caught)
    wrong = (seen[0][1] + seen[1][1] + seen[2][1] * 13 / 20) / 3 / 53
    assert h.train_loss[0] != pytest.approx(wrong, rel=1e-3)


def test_resume_with_a_dataset_is_bit_identical(tmp_path):
    x = Lazy(_data())
    _, full, _ = _fit(x, epochs=3, batch_size=8)
    _fit(x, epochs=1, batch_size=8, checkpoint=tmp_path / "c.pt")
    _, resumed, _ = _fit(x, epochs=3, batch_size=8, checkpoint=tmp_path / "c.pt", resume=True)
    for k in full:
        assert torch.equal(full[k], resumed[k])


def test_only_the_minibatches_rows_are_read():
    x = Lazy(_data())
    _fit(x, epochs=1, batch_size=10)
    assert x.reads <= 53 + 10  # one epoch reads each row once (plus a first look)


class Stream(IterableDataset):
    def __iter__(self):
        yield from torch.zeros(5, 6)


class Bad(Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def test_bad_data_sets_are_refused_by_name():
    vae = VAE(6, 2, hidden=(5,))
    with pytest.raises(TypeError, match="iterable-style data set .*no length.*N/B"):
        fit(vae.model, vae.guide, Stream(), progress=False)
    with pytest.raises(TypeError, match="iterable-style"):
        fit(vae.model, vae.guide, DataLoader(Stream(), batch_size=2), progress=False)
    rows = [torch.zeros(6) for _ in range(30)]
    rows[17] = torch.full((6,), float("nan"))
    with pytest.raises(ValueError, match="data: row 17 contains non-finite values"):
        fit(vae.model, vae.guide, Bad(rows), batch_size=30, progress=False)
    ragged = [torch.zeros(6)] * 10 + [torch.zeros(5)]
    with pytest.raises(ValueError, match="reading rows .* failed|every row must have"):
        fit(vae.model, vae.guide, Bad(ragged), batch_size=11, progress=False)
    with pytest.raises(ValueError, match="empty"):
        DatasetRows(Bad([]))


def test_the_diagnostics_read_a_dataset_as_they_read_the_tensor():
    from pyro_lvm.diagnostics import AggregatePosterior, bayes_loop, information, log_likelihood

    x = _data(120)
    _, _, vae = _fit(x, epochs=1, batch_size=20)
    lazy = DataLoader(Lazy(x), batch_size=7)
    a = log_likelihood(vae.model, vae.guide, x, num_particles=20, chunk_size=32)
    b = log_likelihood(vae.model, vae.guide, lazy, num_particles=20, chunk_size=32)
    assert torch.equal(a.log_px, b.log_px) and torch.equal(a.ess, b.ess)
    i, j = (information(vae.model, vae.guide, d, batch_size=32) for d in (x, Lazy(x)))
    assert i.rate == j.rate and i.mutual_information == j.mutual_information
    q = AggregatePosterior.from_guide(vae.guide, Lazy(x), batch_size=50)
    torch.testing.assert_close(q.component_means, AggregatePosterior.from_guide(
        vae.guide, x).component_means)
    assert bayes_loop(vae.model, vae.guide, Lazy(x)).p_value == bayes_loop(
        vae.model, vae.guide, x).p_value


class Listed(Dataset):
    """Rows as Python lists of numbers, or as dicts."""

    def __init__(self, x, as_dict=False):
        self.x, self.as_dict = x, as_dict

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i]} if self.as_dict else self.x[i].tolist()


def test_rows_given_as_lists_are_rows_and_dicts_are_refused_by_name():
    """Found in review: a list of numbers was collated into columns (its first column was
    read as the data)."""
    x = _data()
    rows = as_rows(Listed(x))
    assert rows.row_shape == (6,) and torch.equal(rows.fetch(torch.tensor([3, 1])), x[[3, 1]])
    with pytest.raises(TypeError, match="items are dicts .*keys \\['x'\\].*return the row"):
        as_rows(Listed(x, as_dict=True))
    loader = DataLoader(TensorDataset(x), batch_size=None)  # collate_fn is default_convert
    assert torch.equal(as_rows(loader).fetch(torch.tensor([0, 2])), x[[0, 2]])


def test_a_loader_of_batch_size_one_is_used_with_a_warning():
    with pytest.warns(UserWarning, match="batch size is 1"):
        h, _, _ = _fit(DataLoader(TensorDataset(_data(12))), epochs=1)
    assert h.num_steps == 12


class Noisy(Dataset):
    """Each read draws fresh noise (random augmentation)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.rand(6)


def test_workers_draw_fresh_noise_every_epoch():
    """Found in review: with workers, every epoch read the same 'random' augmentation."""
    rows = as_rows(DataLoader(Noisy(), batch_size=8, num_workers=2))
    idx = [torch.arange(8)]
    one = next(rows.batches(idx, seed=1))[1]
    two = next(rows.batches(idx, seed=2))[1]
    again = next(rows.batches(idx, seed=1))[1]
    assert not torch.equal(one, two) and torch.equal(one, again)
