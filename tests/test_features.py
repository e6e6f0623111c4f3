"""Feature diagnostics: dictionary recovery up to sign and permutation, and the localization
and orientation statistics against shapes whose answer is known, with a calibrated null."""

import math

import pytest
import torch

from pyro_lvm.diagnostics import (
    feature_recovery,
    feature_shapes,
    localization,
    orientation_selectivity,
)
from pyro_lvm.diagnostics.plots import plot_features


def _gabor(angle, size=12, center=(5.5, 5.5), width=1.5, period=4.0):
    rows, cols = torch.meshgrid(torch.arange(size, dtype=torch.float64),
                                torch.arange(size, dtype=torch.float64), indexing="ij")
    u = (cols - center[1]) * math.cos(angle) + (rows - center[0]) * math.sin(angle)
    envelope = torch.exp(-((rows - center[0]) ** 2 + (cols - center[1]) ** 2) / (2 * width**2))
    return (envelope * torch.sin(2 * math.pi * u / period)).flatten()


def test_recovery_undoes_sign_and_permutation():
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(10, 20, generator=g)
    perm = torch.randperm(10, generator=g)
    signs = torch.where(torch.rand(10, generator=g) < 0.5, -1.0, 1.0)
    learned = torch.cat([3 * signs[:, None] * truth[perm], torch.randn(4, 20, generator=g)])
    r = feature_recovery(truth, learned)
    assert torch.equal(perm[r.match], torch.arange(10))
    assert r.worst == pytest.approx(1.0, abs=1e-6)
    assert feature_recovery(truth, torch.randn(14, 20, generator=g)).worst < 0.9


@pytest.mark.parametrize("learned, match", [
    (torch.randn(2, 20), "need at least as many learned features as true ones, got 2 < 3"),
    (torch.randn(3, 21), "true_features have 20 pixels, learned_features have 21"),
    (torch.full((3, 20), float("nan")), "learned_features contains NaN or inf"),
    (torch.zeros(3, 20), r"learned_features has all-zero features \(rows \[0, 1, 2\]\)"),
])
def test_recovery_bad_input(learned, match):
    with pytest.raises(ValueError, match=match):
        feature_recovery(torch.randn(3, 20), learned)


def test_gabors_are_localized_and_oriented_at_every_angle_plane_waves_only_oriented():
    angles = [0.0, math.pi / 4, math.pi / 2, 2.0]
    gabors = torch.stack([_gabor(a) for a in angles])
    rows, cols = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    waves = torch.stack([torch.cos(2 * math.pi * (math.cos(a) * cols + math.sin(a) * rows) / 4)
                         .flatten() for a in angles])
    shapes = feature_shapes(torch.cat([gabors, waves]), (12, 12))
    assert shapes.localized.tolist() == [True] * 4 + [False] * 4
    assert shapes.oriented.all()
    assert shapes.share == 0.5


def test_isotropic_blob_is_localized_but_not_oriented():
    rows, cols = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    blob = torch.exp(-((rows - 3) ** 2 + (cols - 8) ** 2) / 2).flatten()
    assert localization(blob[None], (12, 12)).item() > 0.99
    assert orientation_selectivity(blob[None], (12, 12)).item() < 0.01


def test_the_white_noise_null_is_calibrated():
    """Fresh white-noise features pass each test at about the nominal level (1%)."""
    g = torch.Generator().manual_seed(123)
    shapes = feature_shapes(torch.randn(3000, 64, generator=g), (8, 8), level=0.01)
    for rate in (shapes.localized.float().mean(), shapes.oriented.float().mean()):
        assert 0.002 < rate < 0.025  # Binomial(3000, 0.01): 30 +- 5.5


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_shape=(8, 9)), r"image_shape \(8, 9\) has 72 pixels but the features have 64"),
    (dict(image_shape=(8, 8), window=9), r"window 9 is larger than the image \(8, 8\)"),
    (dict(image_shape=(8, 8), level=1.5), r"level must be in \(0, 1\), got 1.5"),
])
def test_shape_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        feature_shapes(torch.randn(5, 64), **kwargs)


def test_plot_marks_localized_and_oriented_features():
    features = torch.stack([_gabor(0.3), torch.ones(144, dtype=torch.float64)])
    shapes = feature_shapes(features, (12, 12))
    fig = plot_features(features, (12, 12), shapes=shapes, title="two")
    edge_colors = [ax.spines["top"].get_edgecolor() for ax in fig.axes]
    assert edge_colors[0] != edge_colors[1]
