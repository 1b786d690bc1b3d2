"""``python -m unmasking``: the ``unmasking`` command."""

import sys

from .commands import main

sys.exit(main())
