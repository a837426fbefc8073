"""``python -m bench.console_cost --upstream URL``: what an open operator console costs the
chat hot path, measured as interleaved A/B rounds in one run.

Starts ``llm-edge up`` (embedded nats-server, broker, worker, bridge; NATS KV L2; product
defaults otherwise) in front of ``URL``, an OpenAI-compatible ``.../v1`` base that answers
``POST /chat/completions`` for model ``mock-gpt`` after some latency. Any such upstream
works; it should cost little CPU, since it shares the cores with the stack under test (an
nginx answering canned completions after a sleep does: see ``bench/nginx_upstream.py``).

Each round runs, with ``wrk`` at 64 connections (``--connections``):

- **miss**: a new prompt every request (every request goes upstream), then
- **hit**: one fixed prompt (answered by the cache),

each twice, A then B: A with no console open, B with a console poller running, a separate
process that asks ``/console/api/state`` and ``/console/api/requests`` once a second, as the
page does while it is open. It prints req/s, p50 and p99 per arm (the median over the rounds,
and every round), the stack's CPU per request (its whole process tree, read from ``/proc``),
and the ratio B/A (``--control``: B's poller asks ``/health`` and ``/ready`` instead, which
sizes what a poller process costs without the console's work). Rounds alternate A and B so
that drift in what else the machine runs lands on both arms. Before the rounds it reads the
idle stack's CPU per second without and with a console open: what one poll a second costs,
unblurred by the load. Linux only (``/proc``); needs ``wrk``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["main"]

CONFIG = """
[providers.up]
kind = "openai_compatible"
base_url = "{upstream}"

[models."mock-gpt"]
deployments = [{{ provider = "up", model = "mock-gpt" }}]
"""

#: wrk script: ``unique`` (a new prompt per request) or ``same`` (one fixed prompt); prints a
#: ``RESULT {...}`` line with the counts and latency percentiles (microseconds).
WRK_SCRIPT = r"""
local mode, tag = "unique", "0"
local n = 0
local fixed = nil
local function chat(prompt)
  return '{"model":"mock-gpt","temperature":0,"max_tokens":32,' ..
         '"messages":[{"role":"user","content":"' .. prompt .. '"}]}'
end
function init(args)
  mode, tag = args[1] or mode, args[2] or tag
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if mode == "same" then
    fixed = wrk.format(nil, "/v1/chat/completions", nil, chat("the question asked every time"))
  end
end
function request()
  if fixed then return fixed end
  n = n + 1
  return wrk.format(nil, "/v1/chat/completions", nil, chat("prompt " .. tag .. " " .. n))
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
POLL_INTERVAL_S = 1.0
#: What an open console page asks once a second.
CONSOLE_PATHS = ("/console/api/state", "/console/api/requests")
#: What the control poller asks instead (``--control``).
CONTROL_PATHS = ("/health", "/ready")


@dataclass(frozen=True, slots=True)
class Run:
    """One wrk run."""

    scenario: str
    arm: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float
    errors: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tree_cpu_s(root: int) -> float:
    """User + system CPU seconds of ``root`` and every descendant still running (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never answered 200")


@dataclass(frozen=True, slots=True)
class _Load:
    """Where and how wrk drives the stack."""

    base: str
    script: Path
    connections: int
    seconds: int


def _wrk(load: _Load, *, mode: str, tag: str, connections: int, seconds: int) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    command += ["-s", str(load.script), load.base, "--", mode, tag]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


def _measure(load: _Load, stack_pid: int, scenario: str, arm: str, tag: str) -> Run:
    cpu_before = _tree_cpu_s(stack_pid)
    mode = "unique" if scenario == "miss" else "same"
    result = _wrk(load, mode=mode, tag=tag, connections=load.connections, seconds=load.seconds)
    cpu = _tree_cpu_s(stack_pid) - cpu_before
    requests = max(1, result["requests"])
    return Run(
        scenario=scenario,
        arm=arm,
        rps=result["requests"] / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        cpu_ms_per_request=1000 * cpu / requests,
        errors=result["status_errors"] + result["socket_errors"],
    )


def _start_poller(base: str, paths: tuple[str, ...]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.console_cost", "--poll", base, "--poll-paths", *paths],
        stdout=subprocess.PIPE,
        text=True,
    )


def _stop_poller(poller: subprocess.Popen[str]) -> dict[str, Any]:
    poller.send_signal(signal.SIGINT)
    out, _ = poller.communicate(timeout=30)
    lines = [x for x in out.splitlines() if x.startswith("POLLS ")]
    return dict(json.loads(lines[-1].removeprefix("POLLS "))) if lines else {}


async def _poll(base: str, paths: list[str]) -> None:
    """What an open console page does: both data endpoints at once, once a second."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    took: list[float] = []
    failures = 0
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        while not stop.is_set():
            started = loop.time()
            replies = await asyncio.gather(
                *(http.get(path) for path in paths), return_exceptions=True
            )
            took.append(loop.time() - started)
            failures += sum(
                1 for r in replies if isinstance(r, BaseException) or r.status_code != 200
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_INTERVAL_S - (loop.time() - started))
    took.sort()
    summary = {
        "polls": len(took),
        "failures": failures,
        "p50_ms": round(1000 * statistics.median(took), 2) if took else None,
        "max_ms": round(1000 * took[-1], 2) if took else None,
    }
    print("POLLS " + json.dumps(summary), flush=True)


def _table(runs: list[Run], rounds: int) -> str:
    lines = [
        "| scenario | console | req/s | p50 ms | p99 ms | CPU ms/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    medians: dict[tuple[str, str], tuple[float, float, float, float]] = {}
    for scenario in ("miss", "hit"):
        for arm in ("none", "open"):
            mine = [r for r in runs if (r.scenario, r.arm) == (scenario, arm)]
            figures = (
                statistics.median(r.rps for r in mine),
                statistics.median(r.p50_ms for r in mine),
                statistics.median(r.p99_ms for r in mine),
                statistics.median(r.cpu_ms_per_request for r in mine),
            )
            medians[(scenario, arm)] = figures
            rps, p50, p99, cpu = figures
            lines.append(
                f"| {scenario} | {arm} | {rps:,.0f} | {p50:.1f} | {p99:.1f} | {cpu:.3f} | "
                f"{sum(r.errors for r in mine)} |"
            )
    lines.append("")
    lines.append(f"Medians of {rounds} rounds. Console open / none:")
    lines.append("")
    for scenario in ("miss", "hit"):
        a, b = medians[(scenario, "none")], medians[(scenario, "open")]
        lines.append(
            f"- {scenario}: req/s x{b[0] / a[0]:.3f}, p50 x{b[1] / a[1]:.3f}, "
            f"p99 x{b[2] / a[2]:.3f}, CPU/req x{b[3] / a[3]:.3f}"
        )
    lines.append("")
    lines.append("Every run, in order:")
    lines.append("")
    for r in runs:
        lines.append(
            f"- {r.scenario} {r.arm}: {r.rps:,.0f} req/s, p50 {r.p50_ms:.1f} ms, "
            f"p99 {r.p99_ms:.1f} ms, {r.cpu_ms_per_request:.3f} CPU ms/req"
        )
    return "\n".join(lines)


def _idle_cost(
    stack_pid: int, base: str, seconds: float, paths: tuple[str, ...]
) -> tuple[float, float]:
    """CPU ms per second of the idle stack without, then with, a console open."""
    before = _tree_cpu_s(stack_pid)
    time.sleep(seconds)
    closed = 1000 * (_tree_cpu_s(stack_pid) - before) / seconds
    poller = _start_poller(base, paths)
    time.sleep(1.5)
    before = _tree_cpu_s(stack_pid)
    time.sleep(seconds)
    opened = 1000 * (_tree_cpu_s(stack_pid) - before) / seconds
    _stop_poller(poller)
    return closed, opened


def _start_stack(upstream: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``llm-edge up`` in a session of its own; its process, base URL and work directory."""
    workdir = Path(tempfile.mkdtemp(prefix="llm-edge-console-cost-"))
    (workdir / "config.toml").write_text(CONFIG.format(upstream=upstream.rstrip("/")))
    (workdir / "load.lua").write_text(WRK_SCRIPT)
    port, nats_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "REDIS_URL"}}
    command = [sys.executable, "-m", "llm_edge", "up", "--config", str(workdir / "config.toml")]
    command += ["--data-dir", str(workdir / "data"), "--nats-port", str(nats_port)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with (workdir / "stack.log").open("w") as log:
        stack = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    return stack, f"http://127.0.0.1:{port}", workdir


def _stop_stack(stack: subprocess.Popen[bytes]) -> None:
    os.killpg(stack.pid, signal.SIGTERM)
    try:
        stack.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(stack.pid, signal.SIGKILL)
        stack.wait()


def _report(
    args: argparse.Namespace,
    runs: list[Run],
    polls: list[dict[str, Any]],
    idle: list[tuple[float, float]],
) -> None:
    print()
    print(
        f"{args.connections} connections, {args.seconds} s per run, "
        f"upstream {args.upstream}, {os.cpu_count()} cores"
        + (" (control: the open arm's poller asks /health and /ready)" if args.control else "")
    )
    print()
    print(_table(runs, args.rounds))
    print()
    if idle:
        closed = statistics.median(c for c, _ in idle)
        opened = statistics.median(o for _, o in idle)
        print(
            f"idle stack: {closed:.1f} CPU ms/s with no console, {opened:.1f} with one open "
            f"(a poll a second costs {opened - closed:.1f} CPU ms; median of {len(idle)} "
            f"pairs of {args.idle_seconds:g} s)"
        )
    print(
        "console polls per open run: "
        + ", ".join(
            f"{p['polls']} (p50 {p['p50_ms']} ms, max {p['max_ms']} ms, {p['failures']} failed)"
            for p in polls
            if p
        )
    )


def _bench(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (Debian: apt-get install wrk)")
    stack, base, workdir = _start_stack(args.upstream)
    polls: list[dict[str, Any]] = []
    runs: list[Run] = []
    idle: list[tuple[float, float]] = []
    try:
        _wait_ready(base + "/ready")
        print(f"llm-edge up on {base} in front of {args.upstream}; log {workdir / 'stack.log'}")
        load = _Load(base, workdir / "load.lua", args.connections, args.seconds)
        _wrk(load, mode="unique", tag="warm", connections=8, seconds=3)  # upstream pool warm
        _wrk(load, mode="same", tag="warm", connections=1, seconds=1)  # the hit prompt cached
        paths = CONTROL_PATHS if args.control else CONSOLE_PATHS
        idle = [_idle_cost(stack.pid, base, args.idle_seconds, paths) for _ in range(2)]
        for n in range(args.rounds):
            for scenario in ("miss", "hit"):
                for arm in ("none", "open"):
                    poller = _start_poller(base, paths) if arm == "open" else None
                    if poller is not None:
                        time.sleep(1.5)  # the page is open and polling
                    tag = f"r{n}{scenario}{arm}{time.time_ns()}"
                    run = _measure(load, stack.pid, scenario, arm, tag)
                    if poller is not None:
                        polls.append(_stop_poller(poller))
                    runs.append(run)
                    print(
                        f"round {n + 1} {scenario:4} console {arm:4}: {run.rps:8,.0f} req/s  "
                        f"p50 {run.p50_ms:6.1f} ms  p99 {run.p99_ms:6.1f} ms",
                        flush=True,
                    )
                    time.sleep(args.pause)
    finally:
        _stop_stack(stack)
    _report(args, runs, polls, idle)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with ``--poll``, be the console poller)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--upstream", help="OpenAI-compatible base URL, e.g. http://h:p/v1")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between runs (2)")
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="idle CPU sample length (10)"
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="the poller asks /health and /ready instead of the console: what a poller costs "
        "without the console's work",
    )
    parser.add_argument("--poll", metavar="BASE", help=argparse.SUPPRESS)
    parser.add_argument(
        "--poll-paths", nargs="*", default=list(CONSOLE_PATHS), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.poll:
        asyncio.run(_poll(args.poll, args.poll_paths))
    elif not args.upstream:
        parser.error("--upstream is required")
    else:
        _bench(args)


if __name__ == "__main__":
    main()
