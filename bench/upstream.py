"""The miss path against a real HTTP upstream: bridge -> broker -> worker -> nginx (20 ms),
in ``llm-edge up`` (one process) and as four processes.

Each row is one fixed-length wrk run (unique prompts, so every request is a cache miss) at
1, 64 and 1000 connections, whole and streamed, first straight to the upstream (the
baseline), then through the stack. CPU per request is read from ``/proc`` for each of our
processes (bridge, broker, worker, nats-server) over the run; the direct rows give the
upstream's own. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LEVELS", "Row", "cpu_seconds", "print_rows", "wrk_run"]

#: Connections per run: one (latency overhead), 64 (the peer harness's S2), 1000 (a burst).
LEVELS = (1, 64, 1000)

_SCRIPT = """
local stream, run, counter = false, "", 0
function init(args)
  stream = args[1] == "1"
  run = args[2]
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function request()
  counter = counter + 1
  local flag = stream and '"stream":true,' or ''
  local body = string.format(
    '{"model":"mock-gpt",%s"messages":[{"role":"user","content":"bench %s %d"}]}',
    flag, run, counter)
  return wrk.format(nil, nil, nil, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d,"non2xx":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One wrk run."""

    target: str
    stream: bool
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: Mapping[str, float]  # per request, by process

    @property
    def cpu_total_ms(self) -> float:
        return sum(self.cpu_ms.values())


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_run(
    target: str,
    url: str,
    *,
    stream: bool,
    connections: int,
    seconds: int,
    pids: Mapping[str, int],
) -> Row:
    """One wrk run of ``seconds`` against ``url``; CPU of each of ``pids`` over it."""
    assert url.startswith("http://127.0.0.1:"), url
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "chat.lua"
        script.write_text(_SCRIPT)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                url,
                "--",
                "1" if stream else "0",
                secrets.token_hex(4),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        ).stdout
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    got = json.loads(line.removeprefix("WRKJSON "))
    requests = max(got["requests"], 1)
    return Row(
        target,
        stream,
        connections,
        got["requests"] / (got["duration_us"] / 1e6),
        got["p50_us"] / 1000,
        got["p99_us"] / 1000,
        got["errors"] + got["non2xx"],
        {name: (after[name] - before[name]) * 1000 / requests for name in pids},
    )


def print_rows(rows: list[Row], delay_ms: float) -> None:
    """A markdown table: each stack row beside the direct row of the same load."""
    direct = {(r.stream, r.connections): r for r in rows if r.target == "direct"}
    names = sorted({name for r in rows for name in r.cpu_ms})
    print(f"\n#### Miss path to a real upstream (nginx, {delay_ms:g} ms), wrk, unique prompts\n")
    print(
        "| target | answer | conns | req/s | p50 ms | p99 ms | overhead p50 / p99 ms | errors "
        f"| CPU ms/req | {' | '.join(names)} |"
    )
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * len(names))
    for row in rows:
        base = direct.get((row.stream, row.connections))
        overhead = (
            f"{row.p50_ms - base.p50_ms:+.1f} / {row.p99_ms - base.p99_ms:+.1f}"
            if base is not None and row is not base
            else "-"
        )
        per_process = " | ".join(f"{row.cpu_ms.get(name, 0.0):.3f}" for name in names)
        print(
            f"| {row.target} | {'stream' if row.stream else 'whole'} | {row.connections} "
            f"| {row.rps:,.0f} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {overhead} | {row.errors} "
            f"| {row.cpu_total_ms:.3f} | {per_process} |"
        )
    print(
        "\nCPU ms/req: our processes together (`llm-edge up` and its nats-server, or the bridge, "
        "broker, worker and nats-server processes; their split in the last columns); on the "
        "direct rows, the upstream's own (nginx). At 1 connection it includes what the "
        "processes spend while idle."
    )
