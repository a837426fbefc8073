"""Run the ``llm-edge`` command as a user would: a separate process."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping

__all__ = ["run_cli", "run_cli_status"]


async def run_cli(
    *args: str, timeout_s: float = 60, env: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """``python -m llm_edge ARGS`` (``env`` added to this process's environment); asserts it
    exits 0 and returns (stdout, stderr)."""
    code, out, err = await run_cli_status(*args, timeout_s=timeout_s, env=env)
    assert code == 0, err
    return out, err


async def run_cli_status(
    *args: str, timeout_s: float = 60, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    """``python -m llm_edge ARGS``, whatever its exit code: (code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llm_edge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
