"""TLS with a self-signed CA: services reach NATS over TLS, the bridge serves HTTPS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from broker.service import BrokerOptions, BrokerService
from edge_bridge import BridgeOptions, BridgeServer
from edge_runtime.embedded import EmbeddedNats
from edge_runtime.process import close_quietly, connect, tls_context
from tests.support.stack import MOCK_ONLY, config_from
from workers import MockProvider, WorkerService

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""
    d = tmp_path_factory.mktemp("tls")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=llm-edge-test-ca",
        cwd=d,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    return d


@pytest.fixture(scope="module")
def tls_nats(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedNats(
        tmp_path_factory.mktemp("js-tls"),
        port=-1,
        extra_args=[
            "--tls",
            "--tlscert",
            str(certs / "server.crt"),
            "--tlskey",
            str(certs / "server.key"),
        ],
    )
    try:
        yield server.start().replace("nats://", "tls://")
    finally:
        server.stop()


async def test_stack_over_tls(certs: Path, tls_nats: str) -> None:
    """Broker, worker and bridge talk to NATS over TLS; HTTPS clients trusting the CA are
    served; a client that does not trust the CA cannot connect to NATS."""
    ca = tls_context(str(certs / "ca.crt"))
    config = config_from(MOCK_ONLY)
    broker = BrokerService(config, BrokerOptions(nats_url=tls_nats, tls=ca))
    await broker.start()
    worker_nc = await connect(tls_nats, "tls-worker", ca)
    worker = WorkerService(worker_nc, MockProvider())
    await worker.start()
    bridge = BridgeServer(
        BridgeOptions(
            nats_url=tls_nats,
            port=0,
            nats_tls=ca,
            tls_cert=str(certs / "server.crt"),
            tls_key=str(certs / "server.key"),
        )
    )
    await bridge.start()
    try:
        trust = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        async with httpx.AsyncClient(verify=trust, timeout=10) as client:
            response = await client.post(
                f"https://127.0.0.1:{bridge.port}/v1/chat/completions",
                json={"model": "mock", "messages": [{"role": "user", "content": "secure"}]},
            )
        assert response.status_code == 200
        assert "secure" in response.json()["choices"][0]["message"]["content"]
        with pytest.raises(Exception):  # noqa: B017,PT011  (ssl or nats: either refuses it)
            await nats.connect(
                tls_nats, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2
            )
    finally:
        await bridge.stop()
        await worker.stop(1)
        await close_quietly(worker_nc)
        await broker.stop(1)
