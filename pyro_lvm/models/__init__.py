"""Latent-variable models written as Pyro programs (``model(x)`` / ``guide(x)`` pairs)."""

from .gaussian_toy import GaussianToy
from .hierarchical import TwoLayerVAE
from .ppca import PPCA
from .sparse_coding import SparseCoding
from .vae import VAE

__all__ = ["GaussianToy", "PPCA", "SparseCoding", "TwoLayerVAE", "VAE"]
