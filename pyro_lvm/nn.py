"""Neural-network building blocks shared by models and guides, and safe Pyro registration."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
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


def register_module(name: str, module: nn.Module) -> nn.Module:
    """``pyro.module(name, module)`` that makes ``module``'s own tensors the registered ones.

    Pyro's param store is global: after ``pyro.module("vae", old)``, a new module registered
    under the same name would silently be replaced in SVI by ``old``'s tensors. Here stale
    entries are evicted first, so the module that runs is always the module that is trained.

    >>> _ = register_module("demo_linear", nn.Linear(2, 2))
    """
    store = pyro.get_param_store()
    for pname, p in module.named_parameters():
        full = param_with_module_name(name, pname)
        if full in store and store.get_param(full) is not p:
            del store[full]
    return pyro.module(name, module)
