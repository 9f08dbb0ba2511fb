"""``python -m optforge``: the same command line as ``optforge``."""

import sys

from optforge.cli import main

sys.exit(main())
