"""Neural-network building blocks shared by models and guides, and safe Pyro registration."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import torch
import torch.nn.functional as F
from pyro.params.param_store import param_with_module_name
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "softplus": nn.Softplus, "elu": nn.ELU}


def mlp(sizes: Sequence[int], activation: str = "tanh") -> nn.Sequential:
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]``, linear output layer.

    >>> import torch
    >>> mlp([64, 32, 4])(torch.zeros(2, 64)).shape
    torch.Size([2, 4])
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"mlp sizes must be at least two positive integers, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(int(a), int(b)))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def inverse_softplus(y: float | torch.Tensor) -> float | torch.Tensor:
    """The x with ``softplus(x) = log(1 + e^x) = y`` (y > 0): the raw value of a parameter
    that is made positive by a softplus, e.g. an initial scale.

    A tensor is computed as ``y + log(-expm1(-y))``, which does not overflow for large y; a
    number as ``log(expm1(y))`` (the stable form above 30, where the two agree).

    >>> round(float(F.softplus(torch.tensor(inverse_softplus(0.1)))), 6)
    0.1
    >>> inverse_softplus(torch.tensor([1e-3, 50.0])).tolist()[1]
    50.0
    """
    if isinstance(y, torch.Tensor):
        return y + torch.log(-torch.expm1(-y))
    return math.log(math.expm1(y)) if y < 30 else y + math.log(-math.expm1(-y))


def gaussian_head(output: torch.Tensor, min_scale: float = 1e-4
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a network's last dimension into the location and scale of a diagonal Normal:
    ``loc, raw = output.chunk(2, -1)``, ``scale = softplus(raw) + min_scale`` (the Gaussian
    encoder of Kingma & Welling 2014, with a softplus for positivity).

    >>> loc, scale = gaussian_head(torch.zeros(3, 4))
    >>> loc.shape, round(float(scale[0, 0]), 4)
    (torch.Size([3, 2]), 0.6932)
    """
    loc, raw = output.chunk(2, dim=-1)
    return loc, F.softplus(raw) + min_scale


def register_module(name: str, module: nn.Module) -> nn.Module:
    """``pyro.module(name, module)`` that makes ``module``'s own tensors the registered ones.

    Pyro's param store is global: after ``pyro.module("vae", old)``, a new module registered
    under the same name would silently be replaced in SVI by ``old``'s tensors. Here stale
    entries are evicted first, so the module that runs is always the module that is trained.

    >>> _ = register_module("demo_linear", nn.Linear(2, 2))
    """
    store = pyro.get_param_store()
    # the store's unconstrained tensors (a module's parameters are their own unconstrained
    # values): read directly, since building each constrained view costs more than the check
    registered = getattr(store, "_params", None)
    for pname, p in module.named_parameters():
        full = param_with_module_name(name, pname)
        if registered is not None:
            stale = full in registered and registered[full] is not p
        else:
            stale = full in store and store.get_param(full) is not p
        if stale:
            del store[full]
    return pyro.module(name, module)
