"""Input validation shared by every layer: clear errors that name the argument and its value."""

from __future__ import annotations

import numbers

import numpy as np
import torch


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int; raise ValueError naming ``name`` unless it is a positive integer.

    >>> check_positive_int(3, "epochs")
    3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_float(value, name: str) -> float:
    """Return ``value`` as a float, or raise ValueError if it is not a finite number > 0.

    >>> check_positive_float(0.5, "lr")
    0.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def to_float_tensor(data, name: str = "data") -> torch.Tensor:
    """A tensor or array as a floating tensor with at least one dimension (rows), else a
    ValueError naming ``name`` (values are not checked: see :func:`as_data_tensor`).

    >>> to_float_tensor([1, 2]).dtype
    torch.float32
    """
    if isinstance(data, torch.Tensor):
        x = data
    elif isinstance(data, np.ndarray | list | tuple):
        try:
            array = np.asarray(data)
            if array.dtype.kind not in "biufc":  # strings, objects: not numbers
                raise TypeError(f"its entries are {array.dtype} (e.g. {array.flat[0].item()!r})")
            x = torch.as_tensor(array)
        except (TypeError, ValueError) as e:  # ragged lists, strings, objects
            raise TypeError(f"{name} must hold numbers in rows of one shape: {e}") from None
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(data).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have one row per datapoint, got a scalar")
    if not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.get_default_dtype())
    return x


def as_data_tensor(data, name: str = "data", dtype: torch.dtype | None = None) -> torch.Tensor:
    """Convert ``data`` (tensor or array) to a floating tensor with one row per datapoint.

    Raises ValueError for an empty data set, a 0-d value, or NaN/inf entries (naming how many
    and where the first one is), and TypeError for something that is not array-like.

    >>> as_data_tensor(np.zeros((3, 2))).shape
    torch.Size([3, 2])
    """
    x = to_float_tensor(data, name)
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the 'meta' device, which holds shapes but no values: "
                         "create it on 'cpu' or 'cuda'")
    if x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if dtype is not None:
        x = x.to(dtype)
    # checked a block of rows at a time: a mask of the whole tensor would double its memory
    rows = max(1, (1 << 22) // max(1, x[0].numel()))
    count, first = 0, None
    for start in range(0, x.shape[0], rows):
        bad = ~torch.isfinite(x[start:start + rows])
        if bad.any():
            count += int(bad.sum())
            if first is None:
                at = bad.nonzero()[0]
                first = (start + int(at[0]), *(int(i) for i in at[1:]))
    if first is not None:
        raise ValueError(
            f"{name} contains {count} non-finite value(s) (NaN or inf); "
            f"the first is at index {first}: {x[first].item()}"
        )
    return x


def check_feature_dim(x: torch.Tensor, expected: int, name: str = "x") -> None:
    """Raise ValueError unless ``x`` has shape (N, expected).

    >>> check_feature_dim(torch.zeros(4, 3), 3)
    """
    if x.dim() != 2 or x.shape[-1] != expected:
        raise ValueError(
            f"{name} must have shape (num_data, {expected}), got {tuple(x.shape)}"
        )
