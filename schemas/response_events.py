"""The Responses API's stream events, written in order with their sequence numbers.

A translating worker writes them as a chat stream arrives (:class:`ResponseStream`); the
broker writes them from a stored response when a streamed request is answered from the
cache (:func:`replay_events`). The shapes are OpenAI's: ``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` / ``.done``, ``response.content_part.done``,
``response.function_call_arguments.delta`` / ``.done``, ``response.output_item.done``, then
``response.completed`` (``response.incomplete`` when the output was cut short).
"""

from __future__ import annotations

import copy
from typing import Any

from schemas.responses import ResponseStatus, new_id

__all__ = ["FINAL_EVENTS", "ResponseStream", "StreamEvent", "replay_events"]

JSON = dict[str, Any]
#: One event: its name and its data.
StreamEvent = tuple[str, JSON]
#: The events that end a response's stream and carry the whole response.
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponseStream:
    """Writes one response's events.

    Args:
        response: the response object so far (``status`` and ``output`` are set here).
    """

    def __init__(self, response: JSON) -> None:
        self.response = response
        self.output: list[JSON] = []
        self._seq = 0
        self._open: JSON | None = None
        self._parts: list[str] = []

    def _event(self, name: str, /, **fields: Any) -> StreamEvent:
        data = {"type": name, "sequence_number": self._seq, **fields}
        self._seq += 1
        return name, data

    def _snapshot(self, status: str) -> JSON:
        snapshot = dict(self.response)
        snapshot["status"] = status
        snapshot["output"] = copy.deepcopy(self.output)
        return snapshot

    def start(self) -> list[StreamEvent]:
        """``response.created`` and ``response.in_progress``."""
        snapshot = self._snapshot(ResponseStatus.IN_PROGRESS)
        snapshot["usage"] = None
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def _index(self) -> int:
        return len(self.output) - 1

    def _add(self, item: JSON) -> StreamEvent:
        self.output.append(item)
        self._open = item
        # A copy: the item grows as the stream goes on, and its ``added`` event shows it new
        # (a replayed stream's events are all written before any is sent).
        added = copy.deepcopy(item)
        return self._event("response.output_item.added", output_index=self._index(), item=added)

    def text(self, delta: str, item_id: str | None = None) -> list[StreamEvent]:
        """Text of the assistant's message (opened on its first text)."""
        events = []
        item = self._open
        if item is None or item["type"] != "message":
            events += self.close()
            message = {
                "id": item_id or new_id("msg"),
                "type": "message",
                "status": ResponseStatus.IN_PROGRESS,
                "role": "assistant",
                "content": [],
            }
            events.append(self._add(message))
            part = {"type": "output_text", "text": "", "annotations": []}
            events.append(self._part_event("response.content_part.added", part))
            item = message
        self._parts.append(delta)
        if delta:
            events.append(self._part_event("response.output_text.delta", delta=delta, logprobs=[]))
        return events

    def _part_event(self, name: str, part: JSON | None = None, **fields: Any) -> StreamEvent:
        assert self._open is not None
        where = {"item_id": self._open["id"], "output_index": self._index(), "content_index": 0}
        if part is not None:
            where["part"] = part
        return self._event(name, **where, **fields)

    def call(self, call_id: str, name: str, item_id: str | None = None) -> list[StreamEvent]:
        """A function call begins (its arguments follow)."""
        events = self.close()
        item = {
            "id": item_id or new_id("fc"),
            "type": "function_call",
            "status": ResponseStatus.IN_PROGRESS,
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        events.append(self._add(item))
        return events

    def arguments(self, delta: str) -> list[StreamEvent]:
        """A piece of the open function call's arguments."""
        item = self._open
        if item is None or item["type"] != "function_call" or not delta:
            return []
        item["arguments"] += delta
        where = {"item_id": item["id"], "output_index": self._index()}
        return [self._event("response.function_call_arguments.delta", **where, delta=delta)]

    def item(self, item: JSON) -> list[StreamEvent]:
        """An output item given whole (one of a kind this writer does not build)."""
        events = self.close()
        events.append(self._add(item))
        events.append(
            self._event("response.output_item.done", output_index=self._index(), item=item)
        )
        self._open = None
        return events

    def close(self) -> list[StreamEvent]:
        """Finish the open item, if any."""
        item = self._open  # still open while the events below name it
        if item is None:
            return []
        events = []
        where = {"item_id": item["id"], "output_index": self._index()}
        if item["type"] == "message":
            text = "".join(self._parts)
            self._parts = []
            part = {"type": "output_text", "text": text, "annotations": []}
            events.append(self._part_event("response.output_text.done", text=text, logprobs=[]))
            events.append(self._part_event("response.content_part.done", part))
            item["content"] = [part]
        elif item["type"] == "function_call":
            arguments = {"arguments": item["arguments"], "name": item["name"]}
            events.append(
                self._event("response.function_call_arguments.done", **where, **arguments)
            )
        item["status"] = ResponseStatus.COMPLETED
        events.append(
            self._event("response.output_item.done", output_index=self._index(), item=item)
        )
        self._open = None
        return events

    def finish(self, final: JSON) -> list[StreamEvent]:
        """Close the open item; then the last event, carrying ``final`` (the whole response)."""
        events = self.close()
        status = final.get("status")
        name = {
            ResponseStatus.INCOMPLETE: "response.incomplete",
            ResponseStatus.FAILED: "response.failed",
        }.get(str(status), "response.completed")
        events.append(self._event(name, response=final))
        return events


def replay_events(response: JSON) -> list[StreamEvent]:
    """A stored response as the events of a stream that produced it."""
    stream = ResponseStream({**response, "usage": None})
    events = stream.start()
    for item in response.get("output") or ():
        if item.get("type") == "message" and all(
            part.get("type") == "output_text" for part in item.get("content") or ()
        ):
            text = "".join(str(part.get("text", "")) for part in item.get("content") or ())
            events += stream.text(text, item_id=item.get("id"))
        elif item.get("type") == "function_call":
            events += stream.call(str(item.get("call_id")), str(item.get("name")), item.get("id"))
            events += stream.arguments(str(item.get("arguments", "")))
        else:
            events += stream.item(item)
    events += stream.finish(response)
    return events
