"""``python -m broker`` still runs the ``llm-edge`` command (kept for one release)."""

from __future__ import annotations

import sys

from llm_edge.cli import main

sys.exit(main())
