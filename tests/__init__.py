"""The test suite.

Set here, before any test module (or conftest) imports NumPy: one OpenBLAS thread per test
process, and per service process a test starts (they inherit the environment). The tests run
two processes on two cores beside nats-server and redis-server; OpenBLAS's default of a
thread per core then oversubscribes the cores, and its threads spin-wait on each other at
every small product the semantic tier makes (one 384-wide vector against an index, a
question's few tokens through a layer). Measured on two busy cores: the embedder's
calibration at load took 5-10 s instead of 1.1 s, and 3,000 index searches 19 s instead of
1.1 s. A variable set by the caller is kept.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
