"""What the built-in models and guides share: their constructor settings, recorded as plain
JSON values (so that :mod:`pyro_lvm.saving` can rebuild them), and the check that the data
have the dtype of their parameters.
"""

from __future__ import annotations

import copy
import json

import torch


class Recorded:
    """Mixin: a class that records its constructor settings with :meth:`_record`; ``config``
    returns them, so that ``type(obj)(**obj.config)`` builds the same object (untrained).

    >>> class Line(Recorded):
    ...     def __init__(self, size, labels=("a",)):
    ...         self._record(size=size, labels=labels)
    >>> Line(3).config
    {'size': 3, 'labels': ['a']}
    """

    _init_kwargs: dict | None = None
    _unrecorded: str = "it did not record its settings"

    def _record(self, **settings) -> None:
        """Keep ``settings`` as plain JSON values (tuples become lists)."""
        try:
            self._init_kwargs = json.loads(json.dumps(settings, allow_nan=False))
        except (TypeError, ValueError) as e:
            self._init_kwargs = None
            self._unrecorded = f"a setting is not a plain JSON value ({e})"

    @property
    def config(self) -> dict:
        """The constructor's settings as plain JSON values (a copy); a ValueError says why
        when the object cannot record them."""
        if self._init_kwargs is None:
            raise ValueError(f"{type(self).__name__} cannot record its settings: "
                             f"{self._unrecorded}")
        return copy.deepcopy(self._init_kwargs)


def check_dtype(x, like: torch.Tensor, who: str, name: str = "x") -> None:
    """Refuse data whose dtype is not the parameters' dtype, naming ``who``, both dtypes and
    the remedy (torch would otherwise fail deep inside a matrix product).

    >>> check_dtype(torch.zeros(2, dtype=torch.float64), torch.zeros(1), "PPCA.model")
    Traceback (most recent call last):
    ...
    ValueError: PPCA.model: the data x are torch.float64 but the parameters are torch.float32: ...
    """
    if not isinstance(x, torch.Tensor) or x.dtype == like.dtype:
        return
    remedy = (".double() (or .to(x.dtype))" if x.dtype == torch.float64
              else f".to({x.dtype})")
    raise ValueError(f"{who}: the data {name} are {x.dtype} but the parameters are "
                     f"{like.dtype}: convert the model with {remedy}, or the data with "
                     f"{name}.to({like.dtype})")
