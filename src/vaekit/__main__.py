"""``python -m vaekit`` is the ``vaekit`` command."""

import os
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while Python loads the command: nothing was written yet
    if "WORLD_SIZE" not in os.environ:  # in a data-parallel job, its launcher says so for the job
        print("vaekit: interrupted; files being written were left as they were", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
