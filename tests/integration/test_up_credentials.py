"""``llm-edge up`` against a NATS server of the operator's, given with its credentials in
the URL: it serves, and never prints the credentials (terminals and their scrollback are
logged)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runtime.embedded import EmbeddedNats
from tests.support.up import RunningUp

pytestmark = pytest.mark.process

PASSWORD = "s3cret-nats-password-0000"


@pytest.fixture
def guarded_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server with JetStream that takes only user ``edge`` with :data:`PASSWORD`."""
    server = EmbeddedNats(
        tmp_path / "js", port=-1, extra_args=["--user", "edge", "--pass", PASSWORD]
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_up_does_not_print_the_nats_credentials(tmp_path: Path, guarded_nats: EmbeddedNats) -> None:
    """The ready line names the server without its user and password, and the API serves."""
    host = guarded_nats.url.removeprefix("nats://")
    up = RunningUp(
        tmp_path, "--nats-url", f"nats://edge:{PASSWORD}@{host}", "--data-dir", str(tmp_path)
    )
    try:
        assert up.ready.wait(60), up.output
        assert "Ready." in up.output, up.output
        assert f"NATS: nats://{host} (subject llm.chat)" in up.output
        assert up.chat("hello").status_code == 200
        assert PASSWORD not in up.output
    finally:
        assert up.interrupt() == 0
    assert PASSWORD not in up.output
