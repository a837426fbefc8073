"""A cheap OpenAI-shaped upstream with latency: nginx with the echo module, one worker process.

It costs about 0.03 ms CPU per request, so the cores stay with the gateway under test; a
Python fake upstream on the same 2 cores would take a share comparable to the gateway's own
and hide its cost. ``POST /v1/chat/completions`` answers a ``chat.completion`` after the delay,
or, when the body says ``"stream": true``, ``chat.completion.chunk`` events (role, 4 content
chunks, finish + usage) and ``data: [DONE]``. Needs Debian's ``nginx-light`` and
``libnginx-mod-http-echo``; :func:`missing` says what is absent. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ECHO_MODULE", "missing", "nginx_upstream"]

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")

_CHUNK = (
    '{"id":"chatcmpl-$request_id","object":"chat.completion.chunk","created":1700000000,'
    '"model":"mock-gpt","choices":[{"index":0,"delta":%s,"finish_reason":%s}]%s}'
)
_COMPLETION = (
    '{"id":"chatcmpl-$request_id","object":"chat.completion","created":1700000000,'
    '"model":"mock-gpt","choices":[{"index":0,"message":{"role":"assistant","content":'
    '"This is a mock response from the benchmark upstream.","refusal":null},'
    '"logprobs":null,"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}'
)


def _stream_body() -> str:
    chunks = [_CHUNK % ('{"role":"assistant","content":""}', "null", "")]
    chunks += [_CHUNK % (f'{{"content":"tok{i} "}}', "null", "") for i in range(4)]
    usage = ',"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}'
    chunks.append(_CHUNK % ("{}", '"stop"', usage))
    lines = [f"echo 'data: {chunk}'; echo;" for chunk in chunks]
    return "\n".join([*lines, "echo 'data: [DONE]'; echo;"])


def _config(workdir: Path, port: int, delay_s: float) -> str:
    return f"""
load_module {ECHO_MODULE};
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    client_body_buffer_size 256k;  # bodies stay in memory, so $request_body is set
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    tcp_nodelay on;
    # evaluated lazily, i.e. after echo_read_request_body
    map $request_body $chat_target {{
        '~"stream"\\s*:\\s*true' /_mock/stream;
        default                 /_mock/chat;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type application/json;
        location = /health {{ echo ok; }}
        location = /v1/chat/completions {{
            echo_read_request_body;
            echo_exec $chat_target;
        }}
        location = /_mock/chat {{
            internal;
            echo_sleep {delay_s};
            echo '{_COMPLETION}';
        }}
        location = /_mock/stream {{
            internal;
            default_type text/event-stream;
            echo_sleep {delay_s};
            {_stream_body()}
        }}
    }}
}}
"""


def missing() -> str | None:
    """What is missing to run the upstream (``None`` when nothing is)."""
    if shutil.which("nginx") is None:
        return "nginx is not installed (apt-get install nginx-light libnginx-mod-http-echo)"
    if not ECHO_MODULE.exists():
        return f"{ECHO_MODULE} is missing (apt-get install libnginx-mod-http-echo)"
    return None


@contextlib.contextmanager
def nginx_upstream(port: int, delay_s: float = 0.020) -> Iterator[subprocess.Popen[bytes]]:
    """Run the upstream on ``127.0.0.1:port`` until the block ends; yield its master process."""
    with tempfile.TemporaryDirectory(prefix="llm-edge-upstream-") as tmp:
        workdir = Path(tmp)
        (workdir / "nginx.conf").write_text(_config(workdir, port, delay_s))
        proc = subprocess.Popen(
            ["nginx", "-c", str(workdir / "nginx.conf"), "-p", tmp, "-g", "daemon off;"]
        )
        try:
            _wait_healthy(f"http://127.0.0.1:{port}/health", proc)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError("nginx upstream did not become ready")
