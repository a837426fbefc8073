"""Services started with a server list connect to a server of it that is up."""

from __future__ import annotations

from edge_runtime.embedded import free_ports
from tests.support.stack import MOCK_ONLY, StackFactory, config_from


async def test_services_connect_through_a_list_whose_first_server_is_down(
    nats_url: str, make_stack: StackFactory
) -> None:
    """Broker (FastStream included), worker, bridge and client given ``dead,live`` serve a
    chat request over NATS and over HTTP, and the broker answers its control-plane ping."""
    servers = f"nats://127.0.0.1:{free_ports(1)[0]},{nats_url}"
    stack = await make_stack(servers, config_from(MOCK_ONLY), bridge=True)
    assert stack.http is not None
    body = {"model": "mock", "messages": [{"role": "user", "content": "which server?"}]}
    response = await stack.http.post("/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]
    ping = await stack.nc.request("llm.broker.ping", b"", timeout=5)
    assert ping.headers is not None
    assert ping.headers["Llm-Status"] == "200"
