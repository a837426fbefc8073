"""The TypeScript client (clients/typescript) passes its own tests against a real stack.

``npm test`` checks that its generated types are current with docs/asyncapi.json, compiles it
and runs node's test runner, which starts ``python -m llm_edge up`` with this interpreter on
free ports (chat, Anthropic messages, stream, errors, cancel, a small batch, embeddings,
responses whole, streamed and stored, a background stream resumed, the example of
docs/clients.md); and its lost-broker tests against the harness of tests/support/harness.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.harness import Harness, running_harness

pytestmark = [pytest.mark.node, pytest.mark.process]

TS_DIR = Path(__file__).parents[2] / "clients" / "typescript"


@pytest.mark.skipif(shutil.which("npm") is None, reason="node and npm are not installed")
@pytest.mark.timeout(120)
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
        timeout=110,  # compiling takes ~15 s and the tests ~30 s on 2 busy cores
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_harness(tmp_path) as running:
        yield running


@pytest.mark.skipif(shutil.which("npm") is None, reason="node and npm are not installed")
@pytest.mark.timeout(120)
async def test_typescript_client_survives_a_lost_broker(harness: Harness) -> None:
    """test/lost-broker.test.ts passes against the harness: a stream and a whole call whose
    broker is lost before the answer are retried and cost one upstream call each."""
    assert (TS_DIR / "node_modules" / "nats").is_dir(), (
        "run `npm ci` in clients/typescript (scripts/dev test does)"
    )
    command = "npm run build && node --test --test-timeout=60000 dist/test/lost-broker.test.js"
    proc = await asyncio.create_subprocess_shell(
        command,
        cwd=TS_DIR,
        env={**os.environ, **harness.environ()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(100):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "# pass 2" in text, text[-3000:]
    assert "# skipped 0" in text, text[-3000:]
