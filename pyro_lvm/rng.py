"""Random numbers: seeded blocks that leave the caller's random state as it was, and generators.

Every seeded computation in pyro_lvm goes through :func:`seeded` (draws from torch's global
RNG, which Pyro's samplers use) or :func:`generator` (a private stream, e.g. for shuffling),
so that ``seed=None`` means the same thing everywhere: continue the global random state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

__all__ = ["generator", "seeded"]


@contextlib.contextmanager
def seeded(seed: int | None, devices: Iterable[torch.device | int] | None = ()) -> Iterator[None]:
    """Run the block with torch's global RNG seeded by ``seed``, then restore the state it had.

    With ``seed=None`` the block draws from the global RNG as it stands and leaves it advanced,
    like any unseeded code. ``devices`` are the CUDA devices whose RNG is forked too (default:
    none; pass ``None`` for all of them, as :func:`torch.random.fork_rng` does).

    >>> before = torch.rand(1, generator=generator(5))
    >>> with seeded(0):
    ...     a = torch.rand(3)
    >>> with seeded(0):
    ...     b = torch.rand(3)
    >>> bool((a == b).all())
    True
    """
    devices = None if devices is None else list(devices)
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def generator(seed: int | None, device: torch.device | str | None = None) -> torch.Generator:
    """A private ``torch.Generator`` seeded by ``seed``; with ``seed=None`` its seed is drawn
    from torch's global RNG, so it follows ``pyro.set_rng_seed`` / ``torch.manual_seed``.

    >>> torch.randperm(4, generator=generator(0)).tolist() == torch.randperm(
    ...     4, generator=generator(0)).tolist()
    True
    >>> torch.manual_seed(1) and None
    >>> a = generator(None).initial_seed()
    >>> torch.manual_seed(1) and None
    >>> a == generator(None).initial_seed()
    True
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)))
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(seed)
