"""``python -m her2lib.runner``: the batch runner's command line (see :mod:`her2lib.runner.pipeline`)."""

import sys

from .pipeline import main

sys.exit(main())
