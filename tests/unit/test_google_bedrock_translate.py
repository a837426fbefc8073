"""Translation edge cases of the Gemini and Bedrock adapters (pure functions), and how their
providers are configured."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from schemas import decode_chat_request
from workers import ProviderConfig, ProviderKind, build_provider, http_client
from workers.bedrock_translate import (
    StreamTranslator as ConverseStream,
)
from workers.bedrock_translate import (
    completion_from_converse,
    to_converse_request,
)
from workers.gemini_translate import (
    StreamTranslator as GeminiStream,
)
from workers.gemini_translate import (
    completion_from_gemini,
    to_gemini_request,
)

TOOL = {"type": "function", "function": {"name": "lookup"}}


def chat(**fields: object) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.json.encode(body)


def test_gemini_several_candidates_thoughts_and_thinking_tokens() -> None:
    """``n`` asks for candidates, each becomes a choice; thought parts are not the answer,
    but thinking tokens are billed as completion tokens."""
    assert to_gemini_request(decode_chat_request(chat(n=2)))["generationConfig"] == {
        "candidateCount": 2
    }
    body = {
        "candidates": [
            {
                "content": {"parts": [{"text": "pondering", "thought": True}, {"text": "A"}]},
                "finishReason": "STOP",
                "index": 0,
            },
            {"content": {"parts": [{"text": "B"}]}, "finishReason": "MAX_TOKENS", "index": 1},
        ],
        "usageMetadata": {
            "promptTokenCount": 5,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 40,
        },
    }
    completion = completion_from_gemini(body, "gemini-2.5-pro", 0)
    assert [(c.message.content, c.finish_reason) for c in completion.choices] == [
        ("A", "stop"),
        ("B", "length"),
    ]
    assert completion.usage is not None
    assert (completion.usage.completion_tokens, completion.usage.total_tokens) == (42, 47)


def test_gemini_a_blocked_prompt_is_a_filtered_answer() -> None:
    """A prompt Gemini blocks is an empty answer finished by ``content_filter``, whole and
    streamed; a body with neither candidates nor a verdict is refused."""
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}}
    completion = completion_from_gemini(blocked, "g", 0)
    assert completion.choices[0].finish_reason == "content_filter"
    stream = GeminiStream(model="g", created=0)
    chunks = stream.feed(blocked)
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert stream.finished
    with pytest.raises(ValueError, match="without candidates"):
        completion_from_gemini({}, "g", 0)


def test_gemini_tool_choices_results_and_remote_images() -> None:
    """``none``/``auto`` map to Gemini's modes; a tool result that is not a JSON object goes
    in ``output``; an image by URL is file data with a guessed MIME type."""
    for choice, mode in (("none", "NONE"), ("auto", "AUTO"), ("required", "ANY")):
        body = to_gemini_request(decode_chat_request(chat(tools=[TOOL], tool_choice=choice)))
        assert body["toolConfig"] == {"functionCallingConfig": {"mode": mode}}
    empty = {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}
    body = to_gemini_request(decode_chat_request(chat(tools=[empty])))
    assert body["tools"] == [{"functionDeclarations": [{"name": "now"}]}]  # no empty schema
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "gs://b/cat.webp"}}],
        },
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "plain text"},
    ]
    body = to_gemini_request(decode_chat_request(chat(messages=messages)))
    assert body["contents"][0]["parts"] == [
        {"fileData": {"mimeType": "image/webp", "fileUri": "gs://b/cat.webp"}}
    ]
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "lookup", "response": {"output": "plain text"}}}
    ]


def test_bedrock_schema_tool_choice_none_and_merged_tool_results() -> None:
    """A JSON-schema response format becomes Converse's output config; ``none`` keeps the
    tools unforced; two tool results land in one user turn."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": f"t{i}",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": "{}"},
                }
                for i in (1, 2)
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "one"},
        {"role": "tool", "tool_call_id": "t2", "content": "[1, 2]"},
    ]
    request = decode_chat_request(
        chat(
            messages=messages,
            tools=[TOOL],
            tool_choice="none",
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        )
    )
    body = to_converse_request(request)
    assert "toolChoice" not in body["toolConfig"]
    assert body["outputConfig"]["textFormat"]["structure"]["jsonSchema"] == {
        "name": "n",
        "schema": json.dumps(schema),
    }
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "t1", "content": [{"text": "one"}]}},
        {"toolResult": {"toolUseId": "t2", "content": [{"text": "[1, 2]"}]}},
    ]


def test_bedrock_cache_tokens_count_as_prompt_and_guardrails_filter() -> None:
    """Cache reads and writes are prompt tokens; a guardrail's stop is ``content_filter``."""
    body = {
        "output": {"message": {"role": "assistant", "content": [{"text": "no"}]}},
        "stopReason": "guardrail_intervened",
        "usage": {
            "inputTokens": 3,
            "outputTokens": 1,
            "cacheReadInputTokens": 100,
            "cacheWriteInputTokens": 10,
        },
    }
    completion = completion_from_converse(body, "m", 0, "r")
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 113
    stream = ConverseStream("id", "m", 0)
    assert stream.feed("metadata", {"usage": body["usage"]})[0].usage == completion.usage
    assert not stream.stopped


def test_vertex_and_bedrock_credentials_for_the_mock_fallback(tmp_path: Path) -> None:
    """``up`` serves a Vertex AI model from the mock without a key file, and a Bedrock one
    without anything the AWS chain reads."""
    vertex = ProviderConfig.from_mapping("v", {"kind": "vertex"})
    assert vertex.region == "us-central1"
    assert not vertex.has_credentials({})
    assert vertex.has_credentials({"GOOGLE_APPLICATION_CREDENTIALS": "/k.json"})
    bedrock = ProviderConfig.from_mapping("b", {"kind": "bedrock"})
    assert not bedrock.has_credentials({"HOME": str(tmp_path)})
    assert bedrock.has_credentials({"AWS_ACCESS_KEY_ID": "A"})
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    assert bedrock.has_credentials({"HOME": str(tmp_path)})


async def test_missing_settings_are_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Vertex AI provider without a key file or project, and a Bedrock one without a
    region, are refused when the worker starts, naming what to set."""
    for variable in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):  # botocore reads them
        monkeypatch.delenv(variable, raising=False)
    async with http_client() as client:
        vertex = ProviderConfig(name="v", kind=ProviderKind.VERTEX, region="us-central1")
        with pytest.raises(ValueError, match="credentials_file or GOOGLE_APPLICATION_CREDENTIALS"):
            build_provider(vertex, {}, client)
        key = tmp_path / "sa.json"
        info = {"type": "service_account", "client_email": "e", "private_key": "k"}
        key.write_text(json.dumps(info))
        with pytest.raises(ValueError, match="no project"):
            build_provider(vertex, {"GOOGLE_APPLICATION_CREDENTIALS": str(key)}, client)
        bedrock = ProviderConfig(name="b", kind=ProviderKind.BEDROCK)
        empty = {"AWS_CONFIG_FILE": str(tmp_path / "none"), "HOME": str(tmp_path)}
        with pytest.raises(ValueError, match="no AWS region"):
            build_provider(bedrock, empty, client)
