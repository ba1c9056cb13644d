"""``python -m stalign`` (also under ``torchrun -m stalign``)."""

import sys

from .cli import main

sys.exit(main())
