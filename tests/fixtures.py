"""Shared test data and models: one random-truth PPCA, one small VAE trained on the digits;
and a loader for the repository's scripts.

Plain functions live here (imported as ``from fixtures import ...``, like ``gallery``); the
pytest fixtures that cache them for the whole run are in conftest.py.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

from pyro_lvm.models import PPCA


def random_ppca(data_dim: int, latent_dim: int, seed: int, noise_variance: float | None = None,
                random_loc: bool = False, dtype: torch.dtype | None = None) -> PPCA:
    """A PPCA to simulate from, with W ~ N(0, 1) entrywise (and mu ~ N(0, I) with
    ``random_loc``), drawn after ``torch.manual_seed(seed)``; ``noise_variance`` sets sigma^2
    (default: the model's initial value); ``dtype`` converts it before the draws (default:
    torch's default dtype)."""
    torch.manual_seed(seed)
    truth = PPCA(data_dim, latent_dim)
    if dtype is not None:
        truth = truth.to(dtype)
    with torch.no_grad():
        truth.decoder.weight.normal_()
        if random_loc:
            truth.decoder.loc.normal_()
        if noise_variance is not None:
            truth.decoder.log_noise_variance.fill_(math.log(noise_variance))
    return truth


def train_small_vae(seed: int = 3):
    """A 64-8-2 Bernoulli VAE fitted for one epoch to the statically binarized digits, by the
    command line's recipe: ``(result, dataset)`` as :func:`pyro_lvm.recipes.fit_vae` returns."""
    from pyro_lvm import datasets
    from pyro_lvm.recipes import fit_vae

    ds = datasets.digits(binarize="static")
    return fit_vae(ds, latent_dim=2, hidden=(8,), epochs=1, progress=False, seed=seed), ds


def load_script(path: Path):
    """The Python file ``path`` (a script outside the package, e.g. tutorials/build.py) as a
    module."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
