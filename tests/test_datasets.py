"""Built-in data sets: shapes, ranges, determinism, disjoint splits, argument errors."""


import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from pyro_lvm.datasets import Dataset, digits, split_indices, static_binarize

N_DIGITS = 1797


@pytest.fixture(scope="module")
def raw():
    d = load_digits()
    return torch.as_tensor(d.data / 16.0), torch.as_tensor(d.target)


def _parts(ds: Dataset):
    return (ds.train, ds.val, ds.test), (ds.train_labels, ds.val_labels, ds.test_labels)


def test_shapes_dtypes_and_ranges():
    ds = digits()
    images, labels = _parts(ds)
    assert ds.image_shape == (8, 8)
    assert ds.data_dim == 64
    assert ds.sizes == {"train": 1438, "val": 180, "test": 179}
    assert sum(ds.sizes.values()) == N_DIGITS
    for x, y in zip(images, labels, strict=True):
        assert x.dtype == torch.float32 and x.dim() == 2 and x.shape[1] == 64
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert set(y.unique().tolist()) <= set(range(10))
    assert float(ds.train.max()) == 1.0  # intensity 16 maps to exactly 1
    # every digit class appears in training
    assert set(ds.train_labels.unique().tolist()) == set(range(10))


def test_rows_are_the_scaled_sklearn_digits_with_their_labels(raw):
    pixels, targets = raw
    ds = digits(seed=3)
    idx = split_indices(N_DIGITS, seed=3)
    for x, y, i in zip(*_parts(ds), idx, strict=True):
        i = torch.as_tensor(i)
        torch.testing.assert_close(x, pixels[i].float())
        assert torch.equal(y, targets[i])


def test_dtype_argument():
    ds = digits(dtype=torch.float64)
    assert ds.train.dtype == ds.val.dtype == ds.test.dtype == torch.float64
    torch.testing.assert_close(ds.train.float(), digits().train)


def test_same_seed_same_data_different_seed_different_split():
    a, b, c = digits(seed=0), digits(seed=0), digits(seed=1)
    for x, y in zip(_parts(a)[0] + _parts(a)[1], _parts(b)[0] + _parts(b)[1], strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a.train_labels, c.train_labels)
    assert a.sizes == c.sizes


@pytest.mark.parametrize("split", [(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.98, 0.01, 0.01)])
def test_split_is_a_disjoint_partition(split):
    parts = split_indices(N_DIGITS, split, seed=7)
    sets = [set(p.tolist()) for p in parts]
    assert all(len(s) == len(p) >= 1 for s, p in zip(sets, parts, strict=True))
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(range(N_DIGITS))
    for frac, p in zip(split, parts, strict=True):
        assert abs(len(p) - frac * N_DIGITS) <= 1.0


def test_split_of_the_data_has_no_shared_images(raw):
    # Through the public loader: no original row index appears in two parts. Identify rows by
    # their (unique up to duplicates) pixel vectors together with their position in sklearn.
    pixels, _ = raw
    ds = digits(seed=0)
    key = {tuple(row.tolist()): i for i, row in enumerate(pixels.float())}
    found = [[key[tuple(row.tolist())] for row in x] for x in _parts(ds)[0]]
    # load_digits has no duplicate images among these, so the keys identify rows
    assert len(key) == N_DIGITS
    assert len(set(found[0]) | set(found[1]) | set(found[2])) == N_DIGITS


def test_static_binarization_is_binary_seeded_and_unbiased():
    gray, b0, b0_again, b1 = (digits(), digits(binarize="static"),
                              digits(binarize="static"), digits(binarize="static", seed=1))
    for x in _parts(b0)[0]:
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(b0.train, b0_again.train) and torch.equal(b0.test, b0_again.test)
    assert torch.equal(b0.train_labels, gray.train_labels)  # same split for the same seed
    # pixels with intensity 0 or 1 are deterministic; the rest are Bernoulli(p) draws
    assert torch.all(b0.train[gray.train == 0] == 0)
    assert torch.all(b0.train[gray.train == 1] == 1)
    # mean of the draws matches the mean intensity (about 92k draws: s.e. < 0.002)
    assert abs(float(b0.train.mean()) - float(gray.train.mean())) < 0.01
    b1_same_rows = digits(binarize="static", seed=1)
    assert torch.equal(b1.train, b1_same_rows.train)
    assert not torch.equal(b0.train, b1.train)


def test_static_binarize_function():
    p = torch.full((200, 50), 0.3, dtype=torch.float64)
    x = static_binarize(p, seed=5)
    assert x.dtype == torch.float64 and set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(x, static_binarize(p, seed=5))
    assert abs(float(x.mean()) - 0.3) < 0.02
    with pytest.raises(ValueError, match="probabilities"):
        static_binarize(torch.tensor([0.5, 1.5]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"binarize": "dynamic"}, "'dynamic'"),
        ({"binarize": True}, "binarize"),
        ({"split": (0.8, 0.1)}, r"split.*\(0\.8, 0\.1\)"),
        ({"split": (0.8, 0.3, 0.1)}, r"sum to 1.*0\.3"),
        ({"split": (1.0, 0.0, 0.0)}, "val fraction 0.0"),
        ({"split": (1.2, -0.1, -0.1)}, "val fraction -0.1"),
        ({"split": (0.8, float("nan"), 0.2)}, "val fraction nan"),
        ({"split": "abc"}, "'abc'"),
        ({"seed": -1}, "seed.*-1"),
        ({"seed": 1.5}, "seed.*1.5"),
        ({"dtype": torch.int64}, "dtype.*int64"),
    ],
)
def test_invalid_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        digits(**kwargs)


def test_split_indices_errors():
    with pytest.raises(ValueError, match="num_data.*2"):
        split_indices(2)
    with pytest.raises(ValueError, match="sum to 1"):
        split_indices(10, (0.5, 0.5, 0.5))


def test_dataset_is_frozen():
    ds = digits()
    with pytest.raises(AttributeError):
        ds.train = torch.zeros(1)  # type: ignore[misc]
    assert isinstance(ds.train, torch.Tensor) and isinstance(ds.image_shape, tuple)
    assert np.prod(ds.image_shape) == ds.data_dim
