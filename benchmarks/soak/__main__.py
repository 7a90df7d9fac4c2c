"""python -m benchmarks.soak: see the package's docstring."""

import sys

from benchmarks.soak.gauntlet import main

sys.exit(main())
