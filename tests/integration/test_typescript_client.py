"""The TypeScript client (clients/typescript) passes its own tests against a real stack.

``npm test`` checks that its generated types are current with docs/asyncapi.json, compiles it
and runs node's test runner, which starts ``python -m llm_edge up`` with this interpreter on
free ports (chat, Anthropic messages, stream, errors, cancel, a small batch, the example of
docs/clients.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.node, pytest.mark.process]

TS_DIR = Path(__file__).parents[2] / "clients" / "typescript"


@pytest.mark.skipif(shutil.which("npm") is None, reason="node and npm are not installed")
def test_typescript_client_passes_npm_test() -> None:
    """`npm test` in clients/typescript succeeds (its output is shown when it does not)."""
    assert (TS_DIR / "node_modules" / "nats").is_dir(), (
        "run `npm ci` in clients/typescript (scripts/dev test does)"
    )
    env = {**os.environ, "LLM_EDGE_PYTHON": sys.executable}
    done = subprocess.run(
        ["npm", "test"],
        cwd=TS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
