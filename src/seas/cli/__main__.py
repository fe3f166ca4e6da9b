"""``python -m seas.cli``: the ``seas`` command (used by torchrun and the tests)."""

import sys

from seas.cli import main

sys.exit(main())
