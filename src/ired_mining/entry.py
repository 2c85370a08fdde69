"""The ired-train console script: ired_mining.train.main, with Ctrl-C during start-up as one line.

Importing torch and composing the config take seconds; a Ctrl-C then would print the traceback of
whatever import it interrupted. Nothing has been written at that point, so there is nothing to keep.
"""

from __future__ import annotations

import sys


def train() -> None:
    try:
        from ired_mining.train import main
    except KeyboardInterrupt:
        print("ired-train: interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(130)
    main()
