"""``python -m llm_edge`` runs the ``llm-edge`` command."""

from __future__ import annotations

import sys

from llm_edge.cli import main

sys.exit(main())
