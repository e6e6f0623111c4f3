"""``python -m pyro_lvm``: the same as the ``pyro-lvm`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
