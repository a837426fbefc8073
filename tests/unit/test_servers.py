"""NATS server lists: one string (flag or NATS_URL) becomes the servers and their credentials."""

from __future__ import annotations

import pytest

from edge_runtime.servers import ServerList, parse_servers
from llm_edge.cli import _parser


def test_a_comma_separated_list_becomes_the_servers_in_order() -> None:
    """Spaces are tolerated, a bare host:port gets nats://, one URL is a list of one."""
    parsed = parse_servers("nats://a:4222, b:4222 ,tls://c:4223")
    assert parsed == ServerList(("nats://a:4222", "nats://b:4222", "tls://c:4223"))
    assert parse_servers("nats://127.0.0.1:4222").options() == {
        "servers": ["nats://127.0.0.1:4222"]
    }


def test_credentials_given_once_apply_to_every_server() -> None:
    """user:password (or a token) leave the URLs for connection options, so servers learnt
    from the cluster authenticate too; the list prints without them."""
    parsed = parse_servers("nats://svc:s%40cret@a:4222,nats://b:4222")
    assert parsed.options() == {
        "servers": ["nats://a:4222", "nats://b:4222"],
        "user": "svc",
        "password": "s@cret",
    }
    assert "cret" not in str(parsed)
    assert parse_servers("nats://tok@a:4222,nats://tok@b:4222").options()["token"] == "tok"


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("", "no NATS server"),
        ("nats://a:4222,,nats://b:4222", "empty entry"),
        ("http://a:4222", "not a NATS server URL"),
        ("nats://u:p@a:4222,nats://v:q@b:4222", "different credentials"),
        ("ws://a:80,nats://b:4222", "cannot mix"),
    ],
)
def test_a_malformed_list_is_refused_naming_the_fault(text: str, fault: str) -> None:
    """Empty entries, foreign schemes, conflicting credentials and mixed transports."""
    with pytest.raises(ValueError, match=fault):
        parse_servers(text)


@pytest.mark.parametrize(
    "argv", [["broker"], ["worker", "mock"], ["bridge"], ["up"], ["batch", "list"]]
)
def test_every_command_takes_a_server_list_from_nats_url(argv: list[str]) -> None:
    """NATS_URL and --nats-url accept a cluster's servers; a malformed list stops the command
    with a usage error before anything starts."""
    servers = "nats://n1:4222,nats://n2:4222,nats://n3:4222"
    assert _parser({"NATS_URL": servers}).parse_args(argv).nats_url == servers
    with pytest.raises(SystemExit) as stopped:
        _parser({"NATS_URL": "nats://n1:4222,,"}).parse_args(argv)
    assert stopped.value.code == 2
