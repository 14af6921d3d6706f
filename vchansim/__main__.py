"""``python -m vchansim`` is the ``vchansim`` command."""

import sys

from .cli import main

sys.exit(main())
