"""Files pyro_lvm writes: atomically (temporary file, fsync, rename), so that a crash or an
interrupt while writing leaves the previous file intact and never a truncated one.

Checkpoints, reports and metrics all go through :func:`atomic_open`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = ["atomic_open", "jsonable", "versions", "write_json"]


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", encoding: str | None = None) -> Iterator:
    """Open a temporary file next to ``path`` for writing; on success it is flushed, synced
    and renamed onto ``path`` (creating parent directories); on any error it is removed and
    ``path`` is left as it was.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a" / "b.txt"
    >>> with atomic_open(p, "w", encoding="utf-8") as f:
    ...     _ = f.write("done")
    >>> p.read_text()
    'done'
    >>> try:
    ...     with atomic_open(p, "w", encoding="utf-8") as f:
    ...         _ = f.write("half")
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> p.read_text(), sorted(q.name for q in p.parent.iterdir())
    ('done', ['b.txt'])
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def jsonable(obj):
    """Plain JSON values: tensors and numpy scalars to numbers, NaN/inf to None, tuples to
    lists, keys to strings.

    >>> jsonable({1: (torch.tensor(0.5), float("inf"))})
    {'1': [0.5, None]}
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def versions() -> dict[str, str]:
    """Versions of Python and of the packages pyro_lvm's numbers depend on, as recorded in the
    metrics, reports and saved models it writes.

    >>> sorted(versions())[:3]
    ['matplotlib', 'numpy', 'pyro-ppl']
    """
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("pyro_lvm", "pyro-ppl", "torch", "numpy", "scikit-learn", "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return dict(sorted(out.items()))


def write_json(obj, path) -> Path:
    """Write ``obj`` as strict JSON (NaN and inf become null), indented, atomically; returns
    the path.

    >>> import tempfile
    >>> p = write_json({"a": float("nan"), "b": (1, 2)}, Path(tempfile.mkdtemp()) / "m.json")
    >>> p.read_text()
    '{\\n  "a": null,\\n  "b": [\\n    1,\\n    2\\n  ]\\n}\\n'
    """
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")
    return path
