"""``python -m kubeedge``: the same as the ``kubeedge`` command."""

import sys

from .cli import main

sys.exit(main())
