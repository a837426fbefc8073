"""TLS with a self-signed CA: services reach NATS over TLS (and with client certificates when
the server requires them), the bridge serves HTTPS."""

from __future__ import annotations

import json
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
from tests.support.cli import run_cli
from tests.support.stack import MOCK_ONLY, config_from
from workers import MockProvider, WorkerService

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 / localhost and a client
    certificate (clientAuth) signed by the same CA."""
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
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=llm-edge-service",
        cwd=d,
    )
    (d / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.crt",
        "-days",
        "1",
        "-extfile",
        "client.cnf",
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


@pytest.fixture(scope="module")
def mtls_nats(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server that requires a client certificate signed by the CA (``--tlsverify``)."""
    server = EmbeddedNats(
        tmp_path_factory.mktemp("js-mtls"),
        port=-1,
        extra_args=[
            "--tlsverify",
            "--tlscert",
            str(certs / "server.crt"),
            "--tlskey",
            str(certs / "server.key"),
            "--tlscacert",
            str(certs / "ca.crt"),
        ],
    )
    try:
        yield server.start().replace("nats://", "tls://")
    finally:
        server.stop()


async def test_stack_over_tls(certs: Path, tls_nats: str) -> None:
    """Broker, worker and bridge talk to NATS over TLS; HTTPS clients trusting the CA are
    served; a client that does not trust the CA fails certificate verification."""
    ca = tls_context(str(certs / "ca.crt"))
    await serve_one_request(certs, tls_nats, ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        await nats.connect(
            tls_nats, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2
        )


@pytest.mark.process
async def test_mutual_tls_accepts_client_certificates_and_refuses_none(
    certs: Path, mtls_nats: str
) -> None:
    """Against a server that requires client certificates, broker, worker, bridge and the CLI
    presenting one signed by the CA are served; a client trusting the CA but presenting no
    certificate is refused by the server (certificate required)."""
    with_cert = tls_context(
        str(certs / "ca.crt"), str(certs / "client.crt"), str(certs / "client.key")
    )
    await serve_one_request(
        certs,
        mtls_nats,
        with_cert,
        "--nats-url",
        mtls_nats,
        "--nats-ca",
        str(certs / "ca.crt"),
        "--nats-cert",
        str(certs / "client.crt"),
        "--nats-key",
        str(certs / "client.key"),
    )
    # In TLS 1.3 the server checks the client's certificate after the client's handshake is
    # done: the client reads the server's alert, or finds the connection reset or closed
    # (broken pipe) when it writes its CONNECT first. Either way it is refused; nothing else
    # (a timeout, a protocol error) is accepted here.
    with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
        await nats.connect(
            mtls_nats,
            tls=tls_context(str(certs / "ca.crt")),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
        )
    if isinstance(refused.value, ssl.SSLError):
        assert refused.value.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"


async def serve_one_request(
    certs: Path, url: str, tls: ssl.SSLContext | None, *cli_args: str
) -> None:
    """Broker, worker and HTTPS bridge connected to ``url`` with ``tls`` answer a request (and
    ``llm-edge breaker status CLI_ARGS`` answers, when given)."""
    config = config_from(MOCK_ONLY)
    broker = BrokerService(config, BrokerOptions(nats_url=url, tls=tls))
    await broker.start()
    worker_nc = await connect(url, "tls-worker", tls)
    worker = WorkerService(worker_nc, MockProvider())
    await worker.start()
    bridge = BridgeServer(
        BridgeOptions(
            nats_url=url,
            port=0,
            nats_tls=tls,
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
        if cli_args:
            out, _ = await run_cli("breaker", "status", *cli_args)
            assert json.loads(out)["breakers"]["mock@mock"]["state"] == "closed"
    finally:
        await bridge.stop()
        await worker.stop(1)
        await close_quietly(worker_nc)
        await broker.stop(1)
