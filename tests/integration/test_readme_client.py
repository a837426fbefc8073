"""The Python client example of docs/clients.md runs as written against a real stack."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from tests.support.batch import batch_stack
from tests.support.stack import StackFactory, config_from

pytestmark = pytest.mark.process

CLIENTS = Path(__file__).parents[2] / "docs" / "clients.md"


def example() -> str:
    """The first Python block of the "Python client" section of docs/clients.md."""
    section = CLIENTS.read_text().split("### Python client", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None
    return found.group(1)


async def test_readme_client_example_runs(nats_url: str, make_stack: StackFactory) -> None:
    """The example chats, streams, catches a NotFoundError and runs a batch to completion."""
    config = config_from("""
        [batch]
        poll_s = 0.1
        [cache]
        l2 = "off"
        [providers.mock]
        kind = "mock"
        [models.gpt-4o-mini]
        deployments = [{ provider = "mock" }]
    """)
    code = example().replace("nats://127.0.0.1:4222", nats_url)
    stack = await batch_stack(make_stack, nats_url, config)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=40)
    await stack.stop()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert "404 model_not_found" in lines
    assert lines[-1] == "a 200"
    assert "completed" in lines
