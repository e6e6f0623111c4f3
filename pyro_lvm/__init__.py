"""pyro_lvm: build, fit and diagnose latent-variable generative models written in Pyro.

>>> import pyro_lvm
>>> ppca = pyro_lvm.models.PPCA(data_dim=5, latent_dim=2)
>>> history = pyro_lvm.infer.fit(ppca.model, ppca.guide, ppca.sample(100), epochs=1,
...                              progress=False)
"""

from . import datasets, guides, handlers, infer, models
from .infer import History, fit

__version__ = "0.1.0"
__all__ = ["fit", "History", "datasets", "guides", "handlers", "infer", "models", "__version__"]
