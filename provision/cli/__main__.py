"""`python -m provision.cli`: the `provision` command without the installed console script."""

import sys

from provision.cli.main import main

sys.exit(main())
