"""``python -m skunetseg``: the command line (see :mod:`skunetseg.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
