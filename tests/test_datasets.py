"""Built-in data sets: shapes, ranges, determinism, disjoint splits, argument errors; whitened
image patches (power spectrum), procedural sprites (factors), data simulated from a model,
MNIST files (IDX / .npz written here, no download), and a user's own .npy / .npz / .csv / .pt
file (load_file)."""

import gzip
import math
import os
import re
import struct

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from sklearn.datasets import load_digits

from pyro_lvm import datasets
from pyro_lvm.datasets import (
    DATA_FILE_SUFFIXES,
    SPRITE_FACTORS,
    SPRITE_SHAPES,
    Dataset,
    MissingFileError,
    UnreadableFileError,
    digits,
    dynamic_binarize,
    from_model,
    image_patches,
    load_file,
    load_mnist,
    parse_image_shape,
    render_sprites,
    split_indices,
    sprites,
    static_binarize,
)

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
        ({"binarize": "Dynamic"}, "'Dynamic'"),
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


# ---------------------------------------------------------------------------------------------
# dynamic binarization


def test_dynamic_digits_are_gray_levels_marked_dynamic():
    gray, dyn, static = digits(), digits(binarize="dynamic"), digits(binarize="static")
    assert dyn.binarization == "dynamic" and static.binarization == "static"
    assert gray.binarization is None
    assert "dynamic" in dyn.name
    for x, y in zip(_parts(dyn)[0] + _parts(dyn)[1], _parts(gray)[0] + _parts(gray)[1],
                    strict=True):
        assert torch.equal(x, y)


def test_dynamic_binarize_redraws_every_call_and_is_unbiased():
    p = digits(binarize="dynamic").train
    g = torch.Generator().manual_seed(0)
    epoch1, epoch2 = dynamic_binarize(p, generator=g), dynamic_binarize(p, generator=g)
    for x in (epoch1, epoch2):
        assert x.shape == p.shape and x.dtype == p.dtype
        assert set(x.unique().tolist()) == {0.0, 1.0}
        assert torch.all(x[p == 0] == 0) and torch.all(x[p == 1] == 1)
        # 92k Bernoulli draws: standard error of the mean < 0.002
        assert abs(float(x.mean()) - float(p.mean())) < 0.01
    # a new draw each epoch: the pixels with 0 < p < 1 differ between epochs
    mid = (p > 0) & (p < 1)
    changed = float((epoch1 != epoch2)[mid].float().mean())
    expected = float((2 * p * (1 - p))[mid].mean())  # P(two draws differ)
    assert abs(changed - expected) < 0.02
    # a seeded generator reproduces the draw
    assert torch.equal(epoch1, dynamic_binarize(p, generator=torch.Generator().manual_seed(0)))


def test_dynamic_binarize_uses_only_the_given_generator():
    state = torch.random.get_rng_state()
    dynamic_binarize(torch.full((10, 10), 0.5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.random.get_rng_state())
    torch.manual_seed(3)
    a = dynamic_binarize(torch.full((10, 10), 0.5))
    torch.manual_seed(3)
    assert torch.equal(a, dynamic_binarize(torch.full((10, 10), 0.5)))


def test_dynamic_binarize_errors():
    with pytest.raises(ValueError, match="probabilities"):
        dynamic_binarize(torch.tensor([0.5, -0.1]))
    with pytest.raises(ValueError, match="generator.*3"):
        dynamic_binarize(torch.tensor([0.5]), generator=3)


def test_dataset_positional_fields_are_backwards_compatible():
    z, lab = torch.zeros(3, 4), torch.zeros(3, dtype=torch.long)
    ds = Dataset(z, z, z, lab, lab, lab, (2, 2), "toy")
    assert ds.name == "toy" and ds.binarization is None and ds.factors is None
    assert ds.data_dim == 4 and ds.sizes == {"train": 3, "val": 3, "test": 3}


# ---------------------------------------------------------------------------------------------
# whitened natural-image patches


def _mean_power_spectrum(ds: Dataset):
    """Mean (Hann-windowed) 2-D power spectrum of all patches, and |f| in cycles/pixel."""
    size = ds.image_shape[0]
    x = torch.cat(_parts(ds)[0]).double().numpy().reshape(-1, size, size)
    win = np.hanning(size + 2)[1:-1]
    power = (np.abs(np.fft.fft2(x * np.outer(win, win))) ** 2).mean(0)
    freq = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    return power, freq


def test_whitening_flattens_the_power_spectrum():
    # Natural images have power ~ 1/f^2 (Field 1987); R(f) = |f| exp(-(f/f0)^4) flattens it
    # below the roll-off. Measured on 2,000 16x16 patches: low/high power ratio 10.2 raw,
    # 1.02 whitened; log-log slope on 0.05 < f <= 0.3: -1.94 raw, -0.15 whitened.
    ratios, slopes = {}, {}
    for whiten in (False, True):
        power, f = _mean_power_spectrum(image_patches(size=16, n=2000, whiten=whiten, seed=0))
        low, high = (f > 0) & (f <= 0.1), (f > 0.2) & (f <= 0.3)
        ratios[whiten] = power[low].mean() / power[high].mean()
        band = (f > 0.05) & (f <= 0.3)
        slopes[whiten] = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
    assert ratios[False] > 5 and 0.5 < ratios[True] < 2
    assert ratios[False] / ratios[True] > 5
    assert slopes[False] < -1.5 and abs(slopes[True]) < 0.5


@pytest.mark.parametrize("whiten", [True, False])
def test_patches_have_zero_means_and_unit_variance(whiten):
    ds = image_patches(size=8, n=3000, whiten=whiten, seed=2)
    x = torch.cat(_parts(ds)[0]).double()
    assert x.shape == (3000, 64) and ds.image_shape == (8, 8) and ds.data_dim == 64
    assert ds.train.dtype == torch.float32
    assert float(x.mean(1).abs().max()) < 1e-5
    assert abs(float(x.var(unbiased=False)) - 1.0) < 1e-5
    assert ds.sizes == {"train": 2400, "val": 300, "test": 300}
    labels = torch.cat(_parts(ds)[1])
    assert set(labels.unique().tolist()) == {0, 1}  # both photographs are used


def _photographs(whiten: bool, cutoff: float = 0.4) -> list[np.ndarray]:
    """The two scikit-learn photographs as image_patches's docstring defines them, written out
    independently: BT.601 luma in [0, 1], whitened with R(f) = |f| exp(-(f / cutoff)^4) applied
    to the image mirrored into a (2H, 2W) periodic extension (full complex FFT here)."""
    from sklearn.datasets import load_sample_images

    out = []
    for rgb in load_sample_images().images:
        gray = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
        if whiten:
            h, w = gray.shape
            mirrored = np.block([[gray, gray[:, ::-1]], [gray[::-1], gray[::-1, ::-1]]])
            f = np.hypot(np.fft.fftfreq(2 * h)[:, None], np.fft.fftfreq(2 * w)[None, :])
            response = f * np.exp(-((f / cutoff) ** 4))
            gray = np.fft.ifft2(np.fft.fft2(mirrored) * response).real[:h, :w]
        out.append(gray)
    return out


@pytest.mark.parametrize("whiten", [True, False])
def test_patches_are_cut_where_the_factors_say(whiten):
    ds = image_patches(size=6, n=200, seed=4, dtype=torch.float64, whiten=whiten)
    images = _photographs(whiten)
    f = ds.factors["train"]
    assert torch.equal(f["image"], ds.train_labels)
    cuts = np.stack([images[k][r:r + 6, c:c + 6].ravel()
                     for k, r, c in zip(f["image"], f["row"], f["col"], strict=True)])
    cuts -= cuts.mean(1, keepdims=True)
    scale = cuts / ds.train.numpy()  # one common factor: the overall standard deviation
    np.testing.assert_allclose(scale, scale.flat[0], rtol=1e-8)


def test_patches_are_deterministic_given_the_seed():
    a, b, c = image_patches(n=500, seed=1), image_patches(n=500, seed=1), image_patches(n=500)
    assert torch.equal(a.train, b.train) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train, c.train)
    # whiten=False cuts the same patches at the same positions
    raw = image_patches(n=500, seed=1, whiten=False)
    assert torch.equal(raw.factors["val"]["row"], a.factors["val"]["row"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 428}, "size=428 is larger than the images.*427x640"),
        ({"size": 1}, "size must be at least 2.*1"),
        ({"size": 0}, "size.*0"),
        ({"n": 2}, "n must be an integer >= 3.*2"),
        ({"n": 2.5}, "n.*2.5"),
        ({"whiten": "yes"}, "whiten.*'yes'"),
        ({"seed": -2}, "seed.*-2"),
        ({"cutoff": 0.0}, "cutoff.*0.0"),
        ({"dtype": torch.int32}, "dtype.*int32"),
    ],
)
def test_patch_errors_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        image_patches(**kwargs)


# ---------------------------------------------------------------------------------------------
# procedural sprites


@pytest.fixture(scope="module")
def sprite_data():
    return sprites(n=2000, size=16, seed=0)


def test_sprites_are_binary_nonempty_and_in_frame(sprite_data):
    ds = sprite_data
    assert ds.image_shape == (16, 16) and ds.data_dim == 256
    assert ds.sizes == {"train": 1600, "val": 200, "test": 200}
    for x in _parts(ds)[0]:
        assert set(x.unique().tolist()) == {0.0, 1.0}
        assert bool((x.sum(1) > 0).all())
        assert not bool((x.sum(1) == 256).any())
    # every lit pixel centre lies in the shape's disk of radius scale / 4 (so in the frame)
    f = ds.factors["train"]
    centres = (torch.arange(16, dtype=torch.float64) + 0.5) / 16
    img = ds.train.reshape(-1, 16, 16).bool()
    dist2 = ((centres[None, None, :] - f["x"][:, None, None]) ** 2
             + (centres[None, :, None] - f["y"][:, None, None]) ** 2)
    radius2 = (f["scale"] / 4)[:, None, None] ** 2
    assert bool((dist2[img] <= radius2.expand_as(dist2)[img] + 1e-12).all())


def test_sprite_factors_within_their_ranges(sprite_data):
    ds = sprite_data
    for part, labels in zip(("train", "val", "test"), _parts(ds)[1], strict=True):
        f = ds.factors[part]
        assert sorted(f) == sorted(SPRITE_FACTORS)
        assert torch.equal(f["shape"], labels) and f["shape"].dtype == torch.int64
        for name, (low, high) in SPRITE_FACTORS.items():
            assert len(f[name]) == len(labels)
            assert float(f[name].min()) >= low and float(f[name].max()) <= high
    every = torch.cat([ds.factors[p]["shape"] for p in ("train", "val", "test")])
    assert set(every.tolist()) == set(range(len(SPRITE_SHAPES)))
    # roughly uniform: 2000 draws over 4 shapes
    assert every.bincount().min() > 400


def test_same_factors_render_the_same_image(sprite_data):
    ds = sprite_data
    for part, x in zip(("train", "val", "test"), _parts(ds)[0], strict=True):
        again = render_sprites(**ds.factors[part], size=16).reshape(len(x), -1)
        assert torch.equal(again, x)
    assert torch.equal(sprites(n=2000, seed=0).val, ds.val)
    assert not torch.equal(sprites(n=2000, seed=1).train[:100], ds.train[:100])


def _centre_of_mass(img: torch.Tensor):
    rows, cols = torch.meshgrid(torch.arange(img.shape[-2]), torch.arange(img.shape[-1]),
                                indexing="ij")
    mass = img.sum((-2, -1))
    return ((img * cols).sum((-2, -1)) / mass, (img * rows).sum((-2, -1)) / mass)


def test_moving_x_moves_the_centre_of_mass(sprite_data):
    f = {k: v[:300] for k, v in sprite_data.factors["train"].items()}
    f["x"] = f["x"].clamp(0.3, 0.6)
    before = _centre_of_mass(render_sprites(**f, size=16))
    moved = render_sprites(**{**f, "x": f["x"] + 0.125}, size=16)
    after = _centre_of_mass(moved)
    # a shift by 0.125 of the width is exactly 2 pixels, so the image is the same shifted
    torch.testing.assert_close(after[0] - before[0], torch.full((300,), 2.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(after[1], before[1], atol=1e-4, rtol=0)
    # and y moves the centre of mass down the rows
    lower = _centre_of_mass(render_sprites(**{**f, "y": f["y"].clamp(0.3, 0.6) + 0.1}, size=16))
    higher = _centre_of_mass(render_sprites(**{**f, "y": f["y"].clamp(0.3, 0.6)}, size=16))
    assert bool((lower[1] > higher[1]).all())


@pytest.mark.parametrize("shape, area", [(0, 2.0), (1, math.pi / 2),
                                         (2, 3 * math.sqrt(3) / 4)])
def test_sprite_areas_match_the_shapes(shape, area):
    # at 256x256 the pixel count approximates the area: (scale / 4 * size)^2 * unit-disk area
    img = render_sprites(shape, 1.0, 0.7, 0.5, 0.5, size=256)
    assert abs(float(img.sum()) / 64**2 - area) < 0.01 * area


def test_sprite_rotation_by_a_symmetry_changes_little():
    # the ellipse is symmetric under a half turn, the heart is not
    ellipse = render_sprites(1, 1.0, [0.3, 0.3 + math.pi], 0.5, 0.5, size=32)
    heart = render_sprites(3, 1.0, [0.3, 0.3 + math.pi], 0.5, 0.5, size=32)
    assert float((ellipse[0] != ellipse[1]).sum()) <= 2
    assert float((heart[0] != heart[1]).sum()) > 20


def test_sprites_binarize_is_recorded_not_ignored():
    # regression: binarize= was checked and then dropped, so sprites(binarize="dynamic") said
    # binarization=None and a loop that draws fresh images when it is "dynamic" never did
    plain = sprites(n=60, seed=2)
    assert plain.binarization is None
    for binarize in ("static", "dynamic"):
        ds = sprites(n=60, seed=2, binarize=binarize)
        assert ds.binarization == binarize
        assert binarize in ds.name and binarize not in plain.name
        # the images are already binary: every binarization leaves the pixels as they are
        for x, y in zip(_parts(ds)[0], _parts(plain)[0], strict=True):
            assert torch.equal(x, y)


def test_sprites_are_registered_for_the_cli():
    assert set(datasets.DATASETS) >= {"digits", "sprites"}
    for name, loader in datasets.DATASETS.items():
        ds = loader(binarize="static", seed=1)
        assert isinstance(ds, Dataset), name
        assert set(ds.train.unique().tolist()) <= {0.0, 1.0}, name
    assert torch.equal(sprites(binarize="static", n=50).train, sprites(n=50).train)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 8}, "size must be at least 12.*8"),
        ({"n": 2}, "n must be an integer >= 3.*2"),
        ({"binarize": "soft"}, "binarize.*'soft'"),
        ({"seed": "0"}, "seed.*'0'"),
        ({"split": (0.5, 0.5)}, "split"),
    ],
)
def test_sprite_errors_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sprites(**kwargs)


def test_render_sprites_errors():
    with pytest.raises(ValueError, match="shape must be an integer.*4"):
        render_sprites(4, 1.0, 0.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="shape must be an integer.*1.5"):
        render_sprites(1.5, 1.0, 0.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="scale must be positive.*-1"):
        render_sprites(0, -1.0, 0.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="x must be finite"):
        render_sprites(0, 1.0, 0.0, float("nan"), 0.5)


# ---------------------------------------------------------------------------------------------
# simulated from a model


def _toy_model(x):
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(loc, 1.0))
        pyro.sample("x", dist.Normal(2.0 * z[:, None], 0.5).expand([x.shape[0], 3])
                    .to_event(1), obs=x)


def test_from_model_returns_data_and_latents():
    x, latents = from_model(_toy_model, torch.zeros(4000, 3), seed=0)
    assert x.shape == (4000, 3) and sorted(latents) == ["loc", "z"]
    assert latents["z"].shape == (4000,) and latents["loc"].shape == ()
    residual = x - 2.0 * latents["z"][:, None]
    assert abs(float(residual.std()) - 0.5) < 0.02
    assert abs(float(latents["z"].mean() - latents["loc"])) < 0.05
    assert not x.requires_grad


def test_from_model_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = from_model(_toy_model, torch.zeros(50, 3), seed=7)
    assert torch.equal(state, torch.random.get_rng_state())
    b = from_model(_toy_model, torch.ones(50, 3), seed=7)   # data values are ignored
    c = from_model(_toy_model, torch.zeros(50, 3), seed=8)
    assert torch.equal(a.x, b.x) and torch.equal(a.latents["z"], b.latents["z"])
    assert not torch.equal(a.x, c.x)


def test_from_model_n_and_dtype():
    sim = from_model(_toy_model, torch.zeros(1, 3, dtype=torch.float64), n=20)
    assert sim.x.shape == (20, 3) and sim.latents["z"].shape == (20,)
    sim = from_model(_toy_model, np.zeros((5, 3)))
    assert sim.x.shape == (5, 3)


def test_from_model_errors():
    def two_obs(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Normal(0.0, 1.0), obs=x)
            pyro.sample("b", dist.Normal(0.0, 1.0), obs=x)

    def no_obs(x):
        pyro.sample("a", dist.Normal(0.0, 1.0))

    def wrong_shape(x):
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([7]).to_event(1), obs=x.sum(-1)[:7])

    with pytest.raises(ValueError, match=r"exactly one observed site.*\['a', 'b'\]"):
        from_model(two_obs, torch.zeros(5))
    sim = from_model(two_obs, torch.zeros(5), obs_site="b")
    assert sim.x.shape == (5,) and sim.latents == {}
    with pytest.raises(ValueError, match="obs_site='c'"):
        from_model(two_obs, torch.zeros(5), obs_site="c")
    with pytest.raises(ValueError, match=r"found \[\]"):
        from_model(no_obs, torch.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(7,\).*\(10, 2\)"):
        from_model(wrong_shape, torch.zeros(10, 2))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        from_model(two_obs, torch.zeros(5), n=0)
    with pytest.raises(ValueError, match="data_like.*str"):
        from_model(two_obs, "x")


def test_from_model_finds_the_data_from_the_trace_not_pyro_factor_terms():
    # regression: a pyro.factor term is an observed site to Pyro, and from_model refused the
    # model ("found ['penalty', 'x']"); the data is the one observation that is not a factor
    def with_factor(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.factor("penalty", -0.5 * z**2)
            pyro.sample("x", dist.Normal(z, 0.1), obs=x)

    x, latents = from_model(with_factor, torch.zeros(500), seed=1)
    assert sorted(latents) == ["z"]
    assert float((x - latents["z"]).std()) < 0.15  # x, not the factor's (500, 0) value


# ---------------------------------------------------------------------------------------------
# MNIST from local files (small synthetic files written here)

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x00000800 | array.ndim
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def mnist_arrays():
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
            "y_train": rng.integers(0, 10, 20).astype(np.uint8),
            "x_test": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
            "y_test": rng.integers(0, 10, 6).astype(np.uint8)}


def _write_idx(directory, arrays, gz=(False,) * 4):
    directory.mkdir(exist_ok=True)
    paths = []
    for name, key, zipped in zip(IDX_NAMES, ("x_train", "y_train", "x_test", "y_test"), gz,
                                 strict=True):
        data = _idx_bytes(arrays[key])
        path = directory / (name + (".gz" if zipped else ""))
        path.write_bytes(gzip.compress(data) if zipped else data)
        paths.append(path)
    return paths


def _check_mnist(ds, arrays, val_size):
    dtype = ds.train.dtype
    x_train = torch.as_tensor(arrays["x_train"].reshape(20, -1) / 255.0, dtype=dtype)
    assert ds.image_shape == (28, 28) and ds.data_dim == 784
    assert ds.sizes == {"train": 20 - val_size, "val": val_size, "test": 6}
    torch.testing.assert_close(ds.train, x_train[:20 - val_size])
    torch.testing.assert_close(ds.val, x_train[20 - val_size:])   # the last val_size images
    torch.testing.assert_close(
        ds.test, torch.as_tensor(arrays["x_test"].reshape(6, -1) / 255.0, dtype=dtype))
    assert ds.train_labels.tolist() == arrays["y_train"][:20 - val_size].tolist()
    assert ds.val_labels.tolist() == arrays["y_train"][20 - val_size:].tolist()
    assert ds.test_labels.tolist() == arrays["y_test"].tolist()
    assert ds.train_labels.dtype == torch.int64


def test_mnist_idx_files_are_parsed(tmp_path, mnist_arrays):
    _write_idx(tmp_path / "raw", mnist_arrays)
    ds = load_mnist(tmp_path / "raw", val_size=5)
    _check_mnist(ds, mnist_arrays, 5)
    assert ds.binarization is None and ds.name.startswith("MNIST")
    assert float(ds.train.max()) <= 1.0 and float(ds.train.min()) >= 0.0


def test_mnist_gzipped_and_mixed_files(tmp_path, mnist_arrays):
    _write_idx(tmp_path / "gz", mnist_arrays, gz=(True,) * 4)
    _check_mnist(load_mnist(tmp_path / "gz", val_size=4), mnist_arrays, 4)
    _write_idx(tmp_path / "mixed", mnist_arrays, gz=(True, False, False, True))
    _check_mnist(load_mnist(str(tmp_path / "mixed"), val_size=4), mnist_arrays, 4)


def test_mnist_npz_matches_idx(tmp_path, mnist_arrays):
    np.savez(tmp_path / "mnist.npz", **mnist_arrays)
    _write_idx(tmp_path / "raw", mnist_arrays)
    a = load_mnist(tmp_path / "mnist.npz", val_size=3, dtype=torch.float64)
    b = load_mnist(tmp_path / "raw", val_size=3, dtype=torch.float64)
    _check_mnist(b, mnist_arrays, 3)
    for x, y in zip(_parts(a)[0] + _parts(a)[1], _parts(b)[0] + _parts(b)[1], strict=True):
        assert torch.equal(x, y)
    assert a.train.dtype == torch.float64
    full = load_mnist(tmp_path / "mnist.npz", val_size=0)
    assert full.sizes == {"train": 20, "val": 0, "test": 6}


def test_mnist_binarizations(tmp_path, mnist_arrays):
    _write_idx(tmp_path / "raw", mnist_arrays)
    gray = load_mnist(tmp_path / "raw", val_size=5)
    s0, s0b, s1 = (load_mnist(tmp_path / "raw", val_size=5, binarize="static", seed=s)
                   for s in (0, 0, 1))
    assert s0.binarization == "static"
    for x in _parts(s0)[0]:
        assert set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(s0.test, s0b.test) and not torch.equal(s0.train, s1.train)
    assert abs(float(s0.train.mean()) - float(gray.train.mean())) < 0.02
    dyn = load_mnist(tmp_path / "raw", val_size=5, binarize="dynamic")
    assert dyn.binarization == "dynamic" and torch.equal(dyn.train, gray.train)


def test_mnist_truncated_file_names_file_and_sizes(tmp_path, mnist_arrays):
    paths = _write_idx(tmp_path / "raw", mnist_arrays)
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[:-100])
    expected = 16 + 20 * 28 * 28
    with pytest.raises(ValueError, match=rf"train-images-idx3-ubyte is truncated: expected "
                                         rf"{expected} bytes.*got {expected - 100}"):
        load_mnist(tmp_path / "raw", val_size=5)
    paths[0].write_bytes(data[:10])  # not even a whole header
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is truncated"):
        load_mnist(tmp_path / "raw", val_size=5)
    paths[0].write_bytes(data + b"\0")
    with pytest.raises(ValueError, match="longer than its header says"):
        load_mnist(tmp_path / "raw", val_size=5)


def test_mnist_truncated_gz_file(tmp_path, mnist_arrays):
    paths = _write_idx(tmp_path / "gz", mnist_arrays, gz=(False, False, True, False))
    paths[2].write_bytes(paths[2].read_bytes()[:-30])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(tmp_path / "gz", val_size=5)


def test_mnist_wrong_magic_names_file_and_magic(tmp_path, mnist_arrays):
    paths = _write_idx(tmp_path / "raw", mnist_arrays)
    # an images file where the labels should be
    paths[3].write_bytes(paths[2].read_bytes())
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte has magic number 0x00000803, "
                                         "expected 0x00000801"):
        load_mnist(tmp_path / "raw", val_size=5)
    data = bytearray(paths[0].read_bytes())
    data[2] = 0x0D  # int32 instead of unsigned byte
    paths[0].write_bytes(bytes(data))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte has magic number 0x00000D03"):
        load_mnist(tmp_path / "raw", val_size=5)


def test_mnist_missing_file_names_the_path(tmp_path, mnist_arrays):
    paths = _write_idx(tmp_path / "raw", mnist_arrays)
    paths[1].unlink()
    with pytest.raises(MissingFileError, match=str(paths[1])) as err:
        load_mnist(tmp_path / "raw", val_size=5)
    assert isinstance(err.value, ValueError) and isinstance(err.value, FileNotFoundError)
    with pytest.raises(ValueError, match="not found.*nowhere"):
        load_mnist(tmp_path / "nowhere")


def test_mnist_alternative_file_names(tmp_path, mnist_arrays):
    paths = _write_idx(tmp_path / "raw", mnist_arrays)
    for p in paths:
        p.rename(p.with_name(p.name.replace("-idx", ".idx")))
    _check_mnist(load_mnist(tmp_path / "raw", val_size=2), mnist_arrays, 2)


def test_mnist_inconsistent_files(tmp_path, mnist_arrays):
    _write_idx(tmp_path / "raw", {**mnist_arrays, "y_train": mnist_arrays["y_train"][:19]})
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*20 integers.*\(19,\)"):
        load_mnist(tmp_path / "raw", val_size=5)
    _write_idx(tmp_path / "small", {**mnist_arrays,
                                    "x_test": mnist_arrays["x_test"][:, :14, :14]})
    with pytest.raises(ValueError, match=r"\(28, 28\) but test images are \(14, 14\)"):
        load_mnist(tmp_path / "small", val_size=5)


def test_mnist_npz_errors(tmp_path, mnist_arrays):
    np.savez(tmp_path / "partial.npz", x_train=mnist_arrays["x_train"])
    with pytest.raises(ValueError, match=r"partial.npz lacks the arrays \['y_train'"):
        load_mnist(tmp_path / "partial.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="broken.npz"):
        load_mnist(tmp_path / "broken.npz")
    with open(tmp_path / "single.npz", "wb") as fh:
        np.save(fh, mnist_arrays["x_train"])
    with pytest.raises(ValueError, match="cannot read .*single.npz as .npz: it holds a single"):
        load_mnist(tmp_path / "single.npz")
    (tmp_path / "mnist.txt").write_text("x")
    with pytest.raises(ValueError, match=r"\.npz file, got .*mnist.txt"):
        load_mnist(tmp_path / "mnist.txt")
    np.savez(tmp_path / "flat.npz", **{**mnist_arrays, "x_test": np.zeros((6, 784))})
    with pytest.raises(ValueError, match=r"flat.npz \[x_test\].*\(6, 784\)"):
        load_mnist(tmp_path / "flat.npz", val_size=5)
    np.savez(tmp_path / "float.npz", **{**mnist_arrays, "x_test": np.full((6, 28, 28), 2.0)})
    with pytest.raises(ValueError, match=r"float.npz \[x_test\].*\[0, 1\]"):
        load_mnist(tmp_path / "float.npz", val_size=5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"val_size": 20}, "val_size=20 must be smaller than the 20"),
        ({"val_size": -1}, "val_size.*-1"),
        ({"binarize": "Static"}, "binarize.*'Static'"),
        ({"seed": -1}, "seed.*-1"),
    ],
)
def test_mnist_argument_errors(tmp_path, mnist_arrays, kwargs, match):
    np.savez(tmp_path / "mnist.npz", **mnist_arrays)
    with pytest.raises(ValueError, match=match):
        load_mnist(tmp_path / "mnist.npz", **kwargs)
    with pytest.raises(ValueError, match="path.*None"):
        load_mnist(None)


def test_sparse_dictionary_has_unit_atoms_the_stated_support_and_noise():
    data = datasets.sparse_dictionary(4000, patch_dim=10, num_features=15, active=2,
                                      noise=0.1, seed=3)
    torch.testing.assert_close(data.atoms.norm(dim=0), torch.ones(15))
    assert ((data.codes != 0).sum(1) == 2).all()
    residual = data.x - data.codes @ data.atoms.T
    assert abs(float(residual.std()) - 0.1) < 0.005
    again = datasets.sparse_dictionary(4000, patch_dim=10, num_features=15, active=2,
                                       noise=0.1, seed=3)
    assert torch.equal(again.x, data.x)
    with pytest.raises(ValueError, match="active must be at most num_features \\(15\\), got 16"):
        datasets.sparse_dictionary(10, patch_dim=10, num_features=15, active=16)


# ---------------------------------------------------------------------------------------------
# a user's own data file: load_file, parse_image_shape


def _unsplit(ds: Dataset, n: int, split=(0.8, 0.1, 0.1), seed: int = 0) -> torch.Tensor:
    """The rows of ``ds`` back in file order, checking the split is ``split_indices``'s."""
    idx = split_indices(n, split, seed)
    assert ds.sizes == {"train": len(idx[0]), "val": len(idx[1]), "test": len(idx[2])}
    full = torch.full((n, ds.data_dim), float("nan"), dtype=ds.train.dtype)
    for part, i in zip(_parts(ds)[0], idx, strict=True):
        full[torch.as_tensor(i)] = part
    for labels in _parts(ds)[1]:
        assert labels.dtype == torch.int64 and not labels.any()
    return full


def _save(path, array):
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, array)
    elif suffix == ".npz":
        np.savez(path, x=array)
    elif suffix == ".csv":
        np.savetxt(path, array, delimiter=",", fmt="%.17g")
    else:
        torch.save(torch.as_tensor(array), path)
    return path


@pytest.mark.parametrize("suffix", DATA_FILE_SUFFIXES)
@pytest.mark.parametrize("split, seed", [((0.8, 0.1, 0.1), 0), ((0.5, 0.25, 0.25), 3)])
def test_load_file_round_trips_each_format(tmp_path, suffix, split, seed):
    rows = np.random.default_rng(1).normal(size=(23, 4))
    path = _save(tmp_path / f"rows{suffix}", rows)
    ds = load_file(path, split=split, seed=seed, dtype=torch.float64)
    assert torch.equal(_unsplit(ds, 23, split, seed), torch.as_tensor(rows))
    assert ds.image_shape is None and ds.data_dim == 4 and ds.binarization is None
    assert ds.name == f"rows{suffix} (23 x 4)"
    # the same split sizes as the built-in loaders
    assert ds.sizes == sprites(n=23, size=12, split=split, seed=seed).sizes
    default = load_file(str(path), split=split, seed=seed)
    assert default.train.dtype == torch.float32
    torch.testing.assert_close(default.train, ds.train.float())
    assert not torch.equal(load_file(path, seed=seed + 1).train, default.train)


def test_load_file_is_exported_not_registered():
    assert {"load_file", "parse_image_shape", "UnreadableFileError"} <= set(datasets.__all__)
    assert load_file not in datasets.DATASETS.values()
    assert DATA_FILE_SUFFIXES == (".npy", ".npz", ".csv", ".pt")


def test_npz_takes_x_then_data_then_the_only_array(tmp_path):
    rows = np.arange(12.0).reshape(4, 3)
    np.savez(tmp_path / "both.npz", data=rows + 1, x=rows)
    np.savez(tmp_path / "data.npz", data=rows, y=np.arange(4))
    np.savez(tmp_path / "one.npz", anything=rows)
    for name in ("both", "data", "one"):
        ds = load_file(tmp_path / f"{name}.npz", dtype=torch.float64)
        assert torch.equal(_unsplit(ds, 4), torch.as_tensor(rows)), name
    np.savez(tmp_path / "two.npz", a=rows, b=rows)
    with pytest.raises(ValueError, match=r"two.npz holds 2 arrays \['a', 'b'\]; name the data "
                                         r"'x' or 'data', or save only one"):
        load_file(tmp_path / "two.npz")
    np.savez(tmp_path / "none.npz")
    with pytest.raises(ValueError, match=r"none.npz holds no data \(no arrays\)"):
        load_file(tmp_path / "none.npz")


def test_pt_tensor_dicts_and_legacy_files(tmp_path):
    rows = torch.arange(15.0).reshape(5, 3)
    for i, obj in enumerate([{"x": rows, "y": torch.arange(5)}, {"data": rows},
                             {"only": rows}, rows.to(torch.int32), rows.bool()]):
        torch.save(obj, tmp_path / f"{i}.pt")
        ds = load_file(tmp_path / f"{i}.pt")
        expected = rows.bool().float() if i == 4 else rows
        assert torch.equal(_unsplit(ds, 5), expected), obj
    torch.save(rows, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(_unsplit(load_file(tmp_path / "legacy.pt"), 5), rows)
    torch.save({"a": rows, "b": rows}, tmp_path / "two.pt")
    with pytest.raises(ValueError, match=r"two.pt holds 2 entries \['a', 'b'\]; name the data "
                                         r"'x' or 'data'"):
        load_file(tmp_path / "two.pt")
    torch.save([rows], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt holds a list, not a tensor"):
        load_file(tmp_path / "list.pt")
    torch.save({"x": Dataset}, tmp_path / "class.pt")
    with pytest.raises(UnreadableFileError, match=r"cannot read .*class.pt with torch.load\("
                                                  r"weights_only=True\): it holds objects other "
                                                  r"than tensors"):
        load_file(tmp_path / "class.pt")
    torch.save(rows.to(torch.complex64), tmp_path / "complex.pt")
    with pytest.raises(ValueError, match="complex.pt: values must be real numbers, got dtype "
                                         "torch.complex64"):
        load_file(tmp_path / "complex.pt")


def test_csv_header_is_detected_and_skipped(tmp_path):
    rows = np.random.default_rng(2).uniform(size=(6, 3))
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    for header in ("a,b,c\n", '"x 1","y, 2",z\n', ",b,c\n", ""):
        path = tmp_path / "h.csv"
        path.write_text(header + body + "\n")
        ds = load_file(path, dtype=torch.float64)
        assert torch.equal(_unsplit(ds, 6), torch.as_tensor(rows)), header
    # a first row with a number in it is data, not a header
    path.write_text("1,2,x\n" + body)
    with pytest.raises(ValueError, match="column index 2 is not numeric: 1 value.* the first "
                                         "'x' on line 1"):
        load_file(path)


def test_csv_whitespace_separated_with_comments_and_blank_lines(tmp_path):
    path = tmp_path / "ws.csv"
    path.write_text("# my data\n  1 2.5  3\n\n4\t5 -6e-1 # a note\n7 8 9\n10 11 12\n")
    expected = torch.tensor([[1, 2.5, 3], [4, 5, -0.6], [7, 8, 9], [10, 11, 12]],
                            dtype=torch.float64)
    assert torch.equal(_unsplit(load_file(path, dtype=torch.float64), 4), expected)
    path.write_text("a b c\n1 2 3\n4 5 6\n7 8 9\n")
    assert load_file(path).sizes == {"train": 1, "val": 1, "test": 1}
    path.write_text("1, 2 ,3\n4,5,6\n7,8,9\n")  # spaces around commas
    assert load_file(path).data_dim == 3


def test_csv_errors_name_the_file_line_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    cases = [
        ("name,x,y\nalice,1,2\nbob,3,4\n5,6,7\n",
         r"bad.csv: column index 0 \('name'\) is not numeric: 2 value\(s\) are not numbers, "
         r"the first 'alice' on line 2$"),
        ("1,2,3\n4,b,6\n7,8,c\n",
         r"bad.csv: column index 1 is not numeric: 1 value\(s\) are not numbers, the first 'b' "
         r"on line 2; not numeric either: column index 2$"),
        ("1,2,\n3,4,\n5,6,\n", r"column index 2 is not numeric: 3 value\(s\) are not numbers, "
                               r"the first an empty field on line 1"),
        ("1,2,3\n4,5,6\n7,8\n", r"bad.csv: line 3 has 2 columns, expected 3 as in line 1$"),
        ("1 2 3\n\n4 5 6 7\n8 9 10\n", r"bad.csv: line 3 has 4 columns, expected 3 as in line 1"),
        ("a,b,c\n1,2,3\n4,5\n7,8,9\n",
         r"bad.csv: line 3 has 2 columns, expected 3 as in the header \(line 1\)$"),
        ("a,b\n1,2,3\n4,5,6\n7,8,9\n",
         r"bad.csv: line 2 has 3 columns, expected 2 as in the header \(line 1\)$"),
        ("a,b\n1,2\n3,nan\n5,6\ninf,1\n",
         r"bad.csv: 2 value\(s\) are NaN or infinite; the first at row index 1 \(line 3\), "
         r"column index 1: nan$"),
        ("", r"bad.csv holds no data \(no rows\)"),
        ("# only a comment\n\n", r"bad.csv holds no data \(no rows\)"),
        ("a,b,c\n", r"bad.csv holds no data \(a header row, no data rows\)"),
        ("1,2\n3,4\n", r"bad.csv holds 2 row\(s\); at least 3 are needed to split"),
    ]
    for text, match in cases:
        path.write_text(text)
        with pytest.raises(ValueError, match=match):
            load_file(path)
    path.write_bytes(b"1,2\n\xff\xfe,3\n")
    with pytest.raises(ValueError, match="bad.csv is not a UTF-8 text file"):
        load_file(path)


def test_image_files_with_inferred_and_given_shapes(tmp_path):
    images = np.random.default_rng(3).uniform(size=(10, 4, 3))
    flat = torch.as_tensor(images.reshape(10, 12))
    np.save(tmp_path / "im.npy", images)
    torch.save(torch.as_tensor(images), tmp_path / "im.pt")
    for name in ("im.npy", "im.pt"):
        ds = load_file(tmp_path / name, dtype=torch.float64)
        assert ds.image_shape == (4, 3) and ds.data_dim == 12
        assert torch.equal(_unsplit(ds, 10), flat)
        assert ds.name == f"{name} (10 x 12, images 4x3)"
    for given in ((2, 6), "2x6", [np.int64(2), 6]):
        assert load_file(tmp_path / "im.npy", image_shape=given).image_shape == (2, 6)
    np.save(tmp_path / "flat.npy", flat.numpy())
    assert load_file(tmp_path / "flat.npy").image_shape is None
    ds = load_file(tmp_path / "flat.npy", image_shape=(3, 4), dtype=torch.float64)
    assert ds.image_shape == (3, 4) and torch.equal(_unsplit(ds, 10), flat)
    for name in ("im.npy", "flat.npy"):
        with pytest.raises(ValueError, match=rf"{name}: image_shape \(3, 3\) has 9 pixels but "
                                             rf"the rows have 12 values"):
            load_file(tmp_path / name, image_shape=(3, 3))
    for bad in ((0, 12), (12,), (2, 2, 3), 12, (2.0, 6)):
        with pytest.raises(ValueError, match=r"image_shape must be None, \(height, width\)"):
            load_file(tmp_path / "im.npy", image_shape=bad)
    with pytest.raises(ValueError, match="image shape must be HEIGHTxWIDTH"):
        load_file(tmp_path / "im.npy", image_shape="12")


def test_parse_image_shape():
    assert parse_image_shape("28x28") == (28, 28)
    assert parse_image_shape(" 8 X 4 ") == (8, 4)
    for bad in ("28x", "abc", "x28", "28x28x1", "", "-1x3", "2.5x3", "28*28"):
        with pytest.raises(ValueError, match=rf"HEIGHTxWIDTH with two integers, e.g. 28x28, "
                                             rf"got '{re.escape(bad)}'"):
            parse_image_shape(bad)
    for bad in ("0x3", "3x0"):
        with pytest.raises(ValueError, match=f"positive height and width, got '{bad}'"):
            parse_image_shape(bad)
    with pytest.raises(ValueError, match="got 28"):
        parse_image_shape(28)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"data file not found: .*nothing.npy") as err:
        load_file(tmp_path / "nothing.npy")
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ValueError)
    (tmp_path / "folder.npy").mkdir()
    with pytest.raises(UnreadableFileError, match="folder.npy is a directory") as err:
        load_file(tmp_path / "folder.npy")
    assert isinstance(err.value, OSError) and isinstance(err.value, ValueError)
    for name in ("data.txt", "data.NPYX", "data"):
        (tmp_path / name).write_text("1,2\n")
        with pytest.raises(ValueError, match=rf"{name}: unknown file type .*; supported: \.npy, "
                                             rf"\.npz, \.csv, \.pt$"):
            load_file(tmp_path / name)
    with pytest.raises(ValueError, match="path must be a file name, got None"):
        load_file(None)
    upper = _save(tmp_path / "upper.npy", np.ones((3, 2))).rename(tmp_path / "UPPER.NPY")
    assert load_file(upper).data_dim == 2


def test_unreadable_files(tmp_path):
    for name, match in [("junk.npy", r"junk.npy is not a .npy or .npz file"),
                        ("junk.npz", r"junk.npz is not a .npy or .npz file"),
                        ("junk.pt", r"junk.pt is not a file written by torch.save")]:
        (tmp_path / name).write_text("garbage")
        with pytest.raises(UnreadableFileError, match=match):
            load_file(tmp_path / name)
    for name in ("cut.npy", "cut.npz", "cut.pt"):
        data = _save(tmp_path / name, np.zeros((50, 5))).read_bytes()
        (tmp_path / name).write_bytes(data[:300])
        with pytest.raises(UnreadableFileError, match=rf"cannot read .*{name}"):
            load_file(tmp_path / name)
    np.save(tmp_path / "objects.npy", np.array([[1, None]] * 4, dtype=object))
    with pytest.raises(UnreadableFileError, match="objects.npy.*Object arrays cannot be loaded"):
        load_file(tmp_path / "objects.npy")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files without read permission")
def test_file_without_read_permission(tmp_path):
    for name in ("locked.csv", "locked.npy"):
        path = _save(tmp_path / name, np.ones((3, 2)))
        path.chmod(0)
        try:
            with pytest.raises(UnreadableFileError, match=rf"cannot read .*{name}"):
                load_file(path)
        finally:
            path.chmod(0o600)


def test_read_errors_are_unreadable_file_errors(tmp_path, monkeypatch):
    """What a file without read permission raises, also where the tests run as root."""
    import builtins
    import io

    paths = [_save(tmp_path / f"locked{suffix}", np.ones((3, 2))) for suffix in (".csv", ".npy")]
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if str(file) in map(str, paths):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    monkeypatch.setattr(io, "open", deny)
    for path in paths:
        with pytest.raises(UnreadableFileError, match=rf"cannot read .*{path.name}: Permission "
                                                      rf"denied"):
            load_file(path)


@pytest.mark.parametrize("array, match", [
    (np.zeros((0, 3)), r"holds no data \(an array of shape \(0, 3\)\)"),
    (np.zeros(0), r"holds no data \(an array of shape \(0,\)\)"),
    (np.arange(5.0), r"data must be 2-D .* got a 1-D array of shape \(5,\); save "
                     r"x.reshape\(-1, 1\)"),
    (np.float64(3.0), r"data must be 2-D .* got a 0-D array of shape \(\)"),
    (np.zeros((5, 1, 2, 2)), r"data must be 2-D .* got a 4-D array of shape \(5, 1, 2, 2\)$"),
    (np.array([["a", "b"]] * 4), r"values must be real numbers, got dtype <U1"),
    (np.zeros((2, 3)), r"holds 2 row\(s\); at least 3 are needed"),
])
def test_array_content_errors(tmp_path, array, match):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=rf"bad.npy:? {match}"):
        load_file(path)


def test_nan_and_inf_are_counted_and_located(tmp_path):
    rows = np.ones((6, 3))
    rows[2, 1], rows[4, 0], rows[5, 2] = np.nan, np.inf, -np.inf
    for suffix in (".npy", ".npz", ".pt"):
        path = _save(tmp_path / f"bad{suffix}", rows)
        with pytest.raises(ValueError, match=rf"bad{suffix}: 3 value\(s\) are NaN or infinite; "
                                             rf"the first at row index 2, column index 1: nan$"):
            load_file(path)
    images = np.zeros((4, 2, 3))
    images[3, 1, 2] = np.inf
    np.save(tmp_path / "im.npy", images)
    with pytest.raises(ValueError, match=r"1 value\(s\) .* row index 3, column index 5: inf"):
        load_file(tmp_path / "im.npy")
    np.save(tmp_path / "huge.npy", np.full((4, 2), 1e300))
    with pytest.raises(ValueError, match=r"8 value\(s\) .* 1e\+300 \(too large for "
                                         r"torch.float32\)"):
        load_file(tmp_path / "huge.npy")
    assert float(load_file(tmp_path / "huge.npy", dtype=torch.float64).train.max()) == 1e300


def test_load_file_binarize_options(tmp_path):
    probs = np.random.default_rng(4).uniform(size=(400, 10))
    path = _save(tmp_path / "p.npy", probs)
    gray = load_file(path)
    s0, s0b, s1 = (load_file(path, binarize="static", seed=s) for s in (0, 0, 1))
    assert s0.binarization == "static" and s0.name == "p.npy (400 x 10), statically binarized"
    for x in _parts(s0)[0]:
        assert set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(s0.train, s0b.train) and not torch.equal(s0.train, s1.train)
    assert abs(float(s0.train.mean()) - float(gray.train.mean())) < 0.03
    # a pixel of probability p is 1 with frequency p: compare with the gray levels
    assert float((s0.train - gray.train).mean().abs()) < 0.03
    dyn = load_file(path, binarize="dynamic")
    assert dyn.binarization == "dynamic" and torch.equal(dyn.train, gray.train)
    assert dyn.name.endswith(", binarize dynamically")
    wide = _save(tmp_path / "wide.npy", np.linspace(-1, 2, 30).reshape(10, 3))
    for how in ("static", "dynamic"):
        with pytest.raises(ValueError, match=rf"wide.npy: binarize='{how}' needs values in "
                                             rf"\[0, 1\] \(probabilities\), got values from -1 "
                                             rf"to 2$"):
            load_file(wide, binarize=how)
    assert load_file(wide).binarization is None


@pytest.mark.parametrize("kwargs, match", [
    ({"binarize": "Static"}, "binarize must be one of .*'Static'"),
    ({"seed": -1}, "seed must be a non-negative integer, got -1"),
    ({"split": (0.5, 0.5)}, "split must be three fractions"),
    ({"dtype": torch.int64}, "dtype must be a floating torch.dtype"),
])
def test_load_file_argument_errors(tmp_path, kwargs, match):
    path = _save(tmp_path / "ok.npy", np.ones((5, 2)))
    with pytest.raises(ValueError, match=match):
        load_file(path, **kwargs)
