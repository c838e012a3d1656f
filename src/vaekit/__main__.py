"""``python -m vaekit`` is the ``vaekit`` command."""

import os
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while Python loads the command: nothing was written yet
    from .launch import INTERRUPTED

    if "WORLD_SIZE" not in os.environ:  # in a data-parallel job, its launcher says so for the job
        print(f"vaekit: {INTERRUPTED}", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
