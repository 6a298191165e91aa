"""``python -m collector`` is ``posmon-collector``."""

import sys

from .cli import main

sys.exit(main())
