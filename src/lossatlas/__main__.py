"""``python -m lossatlas``: the command line (how torchrun starts each process of a run)."""
import sys

from .cli import main

sys.exit(main())
