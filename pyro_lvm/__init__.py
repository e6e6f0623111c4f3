"""pyro_lvm: build, fit and diagnose latent-variable generative models written in Pyro.

Submodules and the names below are imported on first use (PEP 562), so that the command line
starts without loading torch when it only has to print its help.

>>> import pyro_lvm
>>> ppca = pyro_lvm.models.PPCA(data_dim=5, latent_dim=2)
>>> history = pyro_lvm.fit(ppca.model, ppca.guide, ppca.sample(100), epochs=1,
...                        progress=False)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the submodule that defines it
_NAMES = {"fit": "infer", "History": "infer", "save": "saving", "load": "saving",
          "LoadedModel": "saving", "SavedModelError": "saving"}
_SUBMODULES = ("datasets", "diagnostics", "guides", "handlers", "infer", "models")
__all__ = [*_NAMES, *_SUBMODULES, "__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
