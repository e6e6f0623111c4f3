"""Latent-variable models written as Pyro programs (``model(x)`` / ``guide(x)`` pairs)."""

from .ppca import PPCA
from .vae import VAE

__all__ = ["PPCA", "VAE"]
