"""``python -m zfnet`` is the ``zfnet`` console script."""

import sys

from .cli import main

sys.exit(main())
