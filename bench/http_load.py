"""HTTP load with wrk (a C load generator, so the client is not the bottleneck)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.load import Result

__all__ = ["wrk_available", "wrk_measure"]

_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
{extra}
"""


def wrk_available() -> bool:
    """Whether ``wrk`` is installed (Debian package ``wrk``)."""
    return shutil.which("wrk") is not None


def _run(url: str, script: Path, connections: int, seconds: int) -> tuple[float, float, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def pct(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert match is not None, out
        return float(match.group(1)) * units[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps is not None, out
    return pct("50"), pct("99"), float(rps.group(1))


def wrk_measure(
    name: str, url: str, body: bytes, headers: dict[str, str] | None = None, seconds: int = 5
) -> Result:
    """p50/p99 with one connection, req/s with 64 connections."""
    extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_SCRIPT.format(body=body.decode(), extra=extra))
        p50, p99, _ = _run(url, script, 1, seconds)
        _, _, rps = _run(url, script, 64, seconds)
    return Result(name, p50, p99, rps)
