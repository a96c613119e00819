"""``python -m ishowttsd.admin``: the same as ``ishowtts-admin``."""

import sys

from ishowttsd.admin.cli import main

sys.exit(main())
