"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint holds everything a resumed :func:`~pyro_lvm.infer.fit` needs to continue exactly
as an uninterrupted run: Pyro's parameters (unconstrained), the optimizer state, the history,
early-stopping state and every RNG state. It contains only tensors and plain Python values.
"""

from __future__ import annotations

import hashlib
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_open

FORMAT = "pyro_lvm.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: missing, unreadable, truncated or foreign."""


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename).

    A crash while writing leaves the previous checkpoint intact.

    >>> import tempfile, os
    >>> p = save_checkpoint({"epoch": 1}, os.path.join(tempfile.mkdtemp(), "c.pt"))
    >>> load_checkpoint(p)["epoch"]
    1
    """
    path = Path(path)
    state = {"format": FORMAT, "version": VERSION, **state}
    state["digest"] = tensor_digest(state)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return path


def tensor_digest(state) -> str:
    """SHA-256 over every tensor in ``state`` (dtype, shape and bytes, in the order of sorted
    keys), the ``"digest"`` entry left out: what a flipped byte inside a stored tensor
    changes, which the file format itself does not check.

    >>> tensor_digest({"a": torch.zeros(2)}) == tensor_digest({"a": torch.zeros(2)})
    True
    >>> tensor_digest({"a": torch.zeros(2)}) == tensor_digest({"a": torch.ones(2)})
    False
    """
    h = hashlib.sha256()

    def walk(obj):
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            for key in sorted(obj, key=str):
                if key != "digest":
                    h.update(str(key).encode())
                    walk(obj[key])
        elif isinstance(obj, list | tuple):
            for item in obj:
                walk(item)

    walk(state)
    return h.hexdigest()


def load_checkpoint(path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, safely (``weights_only=True``).

    Raises :class:`CheckpointError` naming the file for a missing, unreadable, truncated or
    foreign file, instead of a traceback from inside torch.

    >>> load_checkpoint("/nonexistent/c.pt")
    Traceback (most recent call last):
    ...
    pyro_lvm.infer.checkpoint.CheckpointError: checkpoint /nonexistent/c.pt does not exist
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError, AttributeError, KeyError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated, corrupted, or not a safe torch "
            f"file): {first}"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro_lvm checkpoint (no {FORMAT!r} marker)")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {state.get('version')!r}; this pyro_lvm reads "
            f"version {VERSION}"
        )
    if "digest" in state and state["digest"] != tensor_digest(state):
        raise CheckpointError(
            f"checkpoint {path} is corrupted: its tensors do not match the checksum written "
            "with them (a changed byte inside a stored tensor)")
    return state


def get_rng_state(shuffle: torch.Generator) -> dict:
    """Every RNG a training run draws from: torch (CPU and CUDA), NumPy, Python, the shuffler.

    >>> sorted(get_rng_state(torch.Generator()))
    ['cuda', 'numpy', 'python', 'shuffle', 'torch']
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global RNG)
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "shuffle": shuffle.get_state(),
    }


def set_rng_state(state: dict, shuffle: torch.Generator) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    numpy_state = ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                   n["cached"])
    np.random.set_state(numpy_state)  # noqa: NPY002 (the global RNG is what users seed)
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    shuffle.set_state(state["shuffle"])
