"""``python -m matchcore.cli``: the same as the ``matchcore`` command."""
import sys

from matchcore.cli import main

sys.exit(main())
