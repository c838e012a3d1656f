"""``python -m vaekit`` is the ``vaekit`` command."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while Python loads the command: nothing was written yet
    print("vaekit: interrupted; files being written were left as they were", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
