"""``python -m cellclr`` (and ``torchrun -m cellclr``): the command line."""

import sys

from cellclr.cli import main

sys.exit(main())
