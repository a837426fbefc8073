"""No web page can drive the keyless console (the default ``up``, open to loopback callers):
another site's form, its ``fetch``, a foreign ``Origin`` or a re-bound ``Host`` are refused,
while the console's own page (JSON with ``X-Llm-Console: 1``) still commands the mesh.

The browser test serves an attacker's page from another origin on this machine and lets a
real headless Chromium submit its form and run its fetch against the bridge.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import CHROMEDRIVER, CHROMIUM, chromium
from tests.support.stack import Stack, StackFactory, config_from

CONFIG = """
    [cache]
    l2 = "off"
    [providers.mock]
    kind = "mock"
    [models.mock]
    deployments = [{ provider = "mock" }]
"""
DEPLOYMENT = "mock@mock"
OPEN = {"action": "open", "deployment": DEPLOYMENT}


@pytest.fixture
async def stack(nats_url: str, make_stack: StackFactory) -> Stack:
    return await make_stack(nats_url, config_from(CONFIG), providers=["mock"], bridge=True)


def console(stack: Stack) -> str:
    assert stack.bridge is not None
    return f"http://127.0.0.1:{stack.bridge.port}/console/api"


async def forced(stack: Stack) -> bool:
    """Whether the deployment's breaker was forced open (through the console's own view)."""
    async with httpx.AsyncClient(timeout=10) as http:
        state = (await http.get(f"{console(stack)}/state")).json()
    rows = [r for r in state["deployments"] if r["deployment"] == DEPLOYMENT]
    return bool(rows and rows[0]["forced"])


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({"content-type": "text/plain"}, b'{"action":"open"}', 415, "unsupported_media_type"),
        (
            {"content-type": "application/x-www-form-urlencoded"},
            b"action=open",
            415,
            "unsupported_media_type",
        ),
        ({"content-type": "application/json"}, None, 403, "console_header_missing"),
        (
            {
                "content-type": "application/json",
                "x-llm-console": "1",
                "origin": "http://evil.test",
            },
            None,
            403,
            "cross_origin",
        ),
    ],
    ids=["text-plain", "form", "no-console-header", "foreign-origin"],
)
async def test_a_command_another_site_could_send_is_refused(
    stack: Stack, headers: dict[str, str], body: bytes | None, status: int, code: str
) -> None:
    """What a form or another site's fetch can send is refused, and the breaker stays as it
    was."""
    content = body if body is not None else httpx.Request("POST", "/", json=OPEN).content
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(f"{console(stack)}/breaker", content=content, headers=headers)
    assert refused.status_code == status, refused.text
    assert refused.json()["error"]["code"] == code
    assert not await forced(stack)


async def test_a_rebound_host_is_refused_and_a_loopback_one_served(stack: Stack) -> None:
    """DNS rebinding: a page whose own domain resolves to 127.0.0.1 sends that domain as
    Host, and reads nothing; the same call naming localhost or 127.0.0.1 is served."""
    assert stack.bridge is not None
    port = stack.bridge.port
    async with httpx.AsyncClient(timeout=10) as http:
        rebound = await http.get(f"{console(stack)}/state", headers={"host": f"evil.test:{port}"})
        assert rebound.status_code == 403
        assert rebound.json()["error"]["code"] == "console_host_refused"
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            served = await http.get(f"{console(stack)}/state", headers={"host": host})
            assert served.status_code == 200, host


async def test_the_console_page_still_commands_the_mesh(stack: Stack) -> None:
    """JSON with X-Llm-Console: 1 from the console's own origin forces the breaker open."""
    assert stack.bridge is not None
    origin = f"http://127.0.0.1:{stack.bridge.port}"
    async with httpx.AsyncClient(timeout=10) as http:
        done = await http.post(
            f"{console(stack)}/breaker",
            json=OPEN,
            headers={"x-llm-console": "1", "origin": origin},
        )
    assert done.status_code == 200, done.text
    assert await forced(stack)


ATTACK = """<!doctype html>
<html><body>
<form id="f" method="POST" enctype="text/plain" action="{api}/breaker" target="sink">
  <input name='{{"action":"open","deployment":"{deployment}","x":"' value='"}}'>
</form>
<iframe name="sink"></iframe>
<script>
  window.results = [];
  fetch("{api}/breaker", {{method: "POST", mode: "no-cors",
      headers: {{"content-type": "text/plain"}},
      body: JSON.stringify({{action: "open", deployment: "{deployment}"}})}})
    .then(() => window.results.push("fetch sent"), () => window.results.push("fetch failed"));
  fetch("{api}/breaker", {{method: "POST",
      headers: {{"content-type": "application/json", "x-llm-console": "1"}},
      body: JSON.stringify({{action: "open", deployment: "{deployment}"}})}})
    .then(() => window.results.push("json sent"), () => window.results.push("json blocked"));
  document.getElementById("f").submit();
  window.results.push("form sent");
</script>
</body></html>
"""


@pytest.fixture
def attacker_site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Another origin on this machine (another port) serving whatever page the test writes."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None, reason="chromium and chromedriver are not installed"
)
async def test_another_sites_page_in_the_operators_browser_cannot_force_a_breaker(
    stack: Stack, attacker_site: tuple[Path, str]
) -> None:
    """A real Chromium opens a page of another origin that posts a text/plain form, a
    no-cors fetch and a JSON fetch with the console's header at the keyless console: the
    breaker is never forced (the JSON fetch dies at its CORS preflight)."""
    folder, site = attacker_site
    (folder / "attack.html").write_text(ATTACK.format(api=console(stack), deployment=DEPLOYMENT))

    def visit() -> Any:
        with chromium() as browser:
            browser.get(f"{site}/attack.html")  # type: ignore[attr-defined]
            for _ in range(100):  # the page reports each attempt when it settles
                results = browser.execute_script("return window.results")  # type: ignore[attr-defined]
                if results and len(results) == 3:
                    return results
                threading.Event().wait(0.05)
            return browser.execute_script("return window.results")  # type: ignore[attr-defined]

    results = await asyncio.to_thread(visit)
    assert sorted(results) == ["fetch sent", "form sent", "json blocked"]
    assert not await forced(stack)
