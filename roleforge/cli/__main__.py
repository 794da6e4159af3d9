"""`python -m roleforge.cli`, the same as the `roleforge` command."""

import sys

from roleforge.cli import main

sys.exit(main())
