"""ired-mining: IRED energy-diffusion reasoning on matrix inversion, with pluggable negative mining."""

import os

# libgomp (torch's OpenMP on Linux) spins for a long time before a waiting thread sleeps. With other
# busy processes on a small machine (a test suite, a second job) each op then waits a whole scheduler
# slice: a step measured 9x slower at batch 2048 on 2 cores. A short spin costs ~1% when the machine
# is idle. It must be set before torch is first imported; a user's own setting wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"
