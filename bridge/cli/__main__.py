"""``python -m bridge.cli``: the worker processes of ``bridge serve`` start this way."""

import sys

from bridge.cli import main

sys.exit(main())
