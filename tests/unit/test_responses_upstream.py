"""Background responses at their upstream, and conversations moving between upstreams: the
pure decisions."""

from __future__ import annotations

import json

from broker.request import Reply
from broker.responses.upstream import running_upstream
from schemas.responses import replayed_input


def test_a_queued_or_running_answer_names_its_upstream_id() -> None:
    """Only a queued or in-progress response object runs at the upstream."""
    for status in ("queued", "in_progress"):
        body = json.dumps({"id": "resp_up", "status": status}).encode()
        assert running_upstream(Reply(200, body)) == "resp_up"
    done = json.dumps({"id": "resp_up", "status": "completed"}).encode()
    assert running_upstream(Reply(200, done)) is None
    assert running_upstream(Reply(500, b'{"id": "x", "status": "queued"}')) is None
    assert running_upstream(Reply(200, b"not json")) is None


def test_replayed_input_leaves_out_ids_and_reasoning() -> None:
    """Earlier turns go before the input, without item ids or reasoning items."""
    history = [
        {"id": "msg_1", "type": "message", "role": "user", "content": "hi"},
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]
    assert replayed_input(history, "next") == [
        {"type": "message", "role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "next"}]},
    ]
