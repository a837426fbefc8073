"""Usage in our answers and in the meter: every translator reports the whole input as
``prompt_tokens`` and the prompt cache's share in ``prompt_tokens_details``; the meter reads
OpenAI's and Anthropic's shapes, and the tier that served, into the kinds the table prices."""

from __future__ import annotations

import json
from typing import Any

from broker.replies.message_stream import message_usage
from broker.tenancy.usage import metered
from broker.upstream.prices import Tokens
from schemas import ChatCompletion, ChatCompletionChunk, Usage
from workers.anthropic_translate import StreamTranslator, completion_from_anthropic
from workers.bedrock_translate import usage_from_converse
from workers.gemini_translate import usage_from_gemini
from workers.messages_from_chat import EventWriter, message_from_completion
from workers.responses_from_chat import ResponseWriter, response_from_completion

#: An Anthropic answer's usage with cache reads and both lifetimes of writes.
CACHED_USAGE: dict[str, Any] = {
    "input_tokens": 50,
    "cache_read_input_tokens": 10_000,
    "cache_creation_input_tokens": 2_000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1_500, "ephemeral_1h_input_tokens": 500},
    "output_tokens": 120,
    "service_tier": "standard",
}
CACHED_DETAILS = {
    "cached_tokens": 10_000,
    "cache_write_tokens": 2_000,
    "cache_write_1h_tokens": 500,
}


def message(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": usage,
    }


def test_an_anthropic_answer_reads_as_openai_with_the_cache_in_the_details() -> None:
    """prompt_tokens is input + cache reads + writes; cached_tokens the reads; the writes and
    their one-hour part are named; Anthropic's ``standard`` tier is OpenAI's ``default``."""
    completion = completion_from_anthropic(message(CACHED_USAGE), created=1)
    assert completion.usage == Usage(
        prompt_tokens=12_050,
        completion_tokens=120,
        total_tokens=12_170,
        prompt_tokens_details=CACHED_DETAILS,
    )
    assert completion.service_tier == "default"


def test_an_anthropic_stream_ends_with_the_cache_aware_usage_and_carries_the_tier() -> None:
    """The closing usage chunk adds message_start's input and cache counts to
    message_delta's output; every chunk names the tier."""
    start_usage = {**CACHED_USAGE, "output_tokens": 1, "service_tier": "priority"}
    translator = StreamTranslator(created=1)
    first = translator.feed({"type": "message_start", "message": {**message(start_usage)}})
    end = translator.feed(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 120},
        }
    )
    assert end[-1].usage == Usage(12_050, 120, 12_170, prompt_tokens_details=CACHED_DETAILS)
    assert {chunk.service_tier for chunk in [*first, *end]} == {"priority"}


def test_an_answer_without_cache_fields_has_no_details() -> None:
    """Nothing is invented when the upstream reports no cache counts."""
    completion = completion_from_anthropic(message({"input_tokens": 5, "output_tokens": 2}), 1)
    assert completion.usage == Usage(5, 2, 7)
    assert completion.service_tier is None


def test_bedrock_and_gemini_report_their_cache_reads_and_writes() -> None:
    """Converse's cacheRead/WriteInputTokens are cached_tokens and cache_write_tokens (and
    prompt tokens); Gemini's cachedContentTokenCount is part of promptTokenCount already."""
    converse = usage_from_converse(
        {
            "inputTokens": 30,
            "cacheReadInputTokens": 700,
            "cacheWriteInputTokens": 200,
            "outputTokens": 9,
        }
    )
    assert converse == Usage(
        930, 9, 939, prompt_tokens_details={"cached_tokens": 700, "cache_write_tokens": 200}
    )
    gemini = usage_from_gemini(
        {"promptTokenCount": 1_000, "cachedContentTokenCount": 800, "candidatesTokenCount": 40}
    )
    assert gemini == Usage(1_000, 40, 1_040, prompt_tokens_details={"cached_tokens": 800})


def test_an_openai_answer_reads_as_anthropic_with_the_cache_apart() -> None:
    """A Messages caller served by an OpenAI-shaped upstream gets Anthropic's counts:
    input_tokens without the cache's share, which has its own fields; and the tier."""
    usage = Usage(12_050, 120, 12_170, prompt_tokens_details=CACHED_DETAILS)
    completion = ChatCompletion("c1", 1, "gpt", [], usage=usage, service_tier="default")
    assert message_from_completion(completion, "gpt")["usage"] == {
        "input_tokens": 50,
        "output_tokens": 120,
        "cache_read_input_tokens": 10_000,
        "cache_creation_input_tokens": 2_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_500, "ephemeral_1h_input_tokens": 500},
        "service_tier": "standard",
    }
    writer = EventWriter("gpt")
    writer.chunk(ChatCompletionChunk("c1", 1, "gpt", [], usage=usage, service_tier="flex"))
    delta = writer.finish()[-2][1]
    assert delta["usage"]["cache_read_input_tokens"] == 10_000
    assert delta["usage"]["service_tier"] == "flex"


def test_the_meter_reads_both_shapes_into_the_same_tokens() -> None:
    """An Anthropic message and the OpenAI answer it translates to meter alike: the same
    kinds of tokens; each shape's tier."""
    want = Tokens(input=12_050, output=120, cached=10_000, cache_write=2_000, cache_write_1h=500)
    anthropic = metered(json.dumps(message(CACHED_USAGE)).encode())
    assert anthropic is not None
    assert (anthropic.tokens, anthropic.tier) == (want, "default")
    openai = {
        "usage": {
            "prompt_tokens": 12_050,
            "completion_tokens": 120,
            "total_tokens": 12_170,
            "prompt_tokens_details": {**CACHED_DETAILS, "audio_tokens": 0},
        },
        "service_tier": "flex",
    }
    read = metered(json.dumps(openai).encode())
    assert read is not None
    assert (read.tokens, read.tier) == (want, "flex")
    assert read.usage.total_tokens == 12_170


def test_the_meter_reads_a_responses_answer_with_its_cache_reads() -> None:
    """A Responses API answer counts ``input_tokens`` as every input token (cached ones
    included, in ``input_tokens_details``), unlike Anthropic's: its cache reads are priced
    as such and nothing is added to its input."""
    response = {
        "object": "response",
        "service_tier": "priority",
        "usage": {
            "input_tokens": 5_000,
            "input_tokens_details": {"cached_tokens": 4_000},
            "output_tokens": 300,
            "output_tokens_details": {"reasoning_tokens": 100},
            "total_tokens": 5_300,
        },
    }
    read = metered(json.dumps(response).encode())
    assert read is not None
    assert (read.tokens, read.tier) == (Tokens(input=5_000, output=300, cached=4_000), "priority")


def test_the_meter_finds_no_usage_where_there_is_none() -> None:
    """A body without usage, or not JSON, has none; an embeddings list has input only."""
    assert metered(b'{"id": "x"}') is None
    assert metered(b"not json") is None
    embeddings = metered(b'{"data": [], "usage": {"prompt_tokens": 8, "total_tokens": 8}}')
    assert embeddings is not None
    assert (embeddings.tokens, embeddings.tier) == (Tokens(input=8), None)


def test_a_stored_anthropic_stream_logs_its_cache_aware_usage() -> None:
    """The stream log reads an Anthropic usage with its cache's share named."""
    assert message_usage(CACHED_USAGE) == Usage(
        12_050, 120, 12_170, prompt_tokens_details=CACHED_DETAILS
    )


def test_a_responses_answer_from_a_chat_provider_keeps_its_cache_writes_and_tier() -> None:
    """A Responses request served by a chat provider (Anthropic, Bedrock) meters as the chat
    answer did: its cache writes priced as writes, not as plain input, and its tier kept."""
    usage = Usage(12_050, 120, 12_170, prompt_tokens_details=CACHED_DETAILS)
    completion = ChatCompletion("c1", 0, "claude", [], usage=usage, service_tier="priority")
    body = response_from_completion(completion, {"model": "m"}, "m", "resp_1")
    read = metered(json.dumps(body).encode())
    want = Tokens(input=12_050, output=120, cached=10_000, cache_write=2_000, cache_write_1h=500)
    assert read is not None
    assert (read.tokens, read.tier) == (want, "priority")


def test_a_responses_stream_from_a_chat_provider_keeps_its_cache_writes_and_tier() -> None:
    """The same through a stream: the final event's response carries the writes and tier."""
    writer = ResponseWriter({"model": "m"}, "m", "resp_1")
    usage = Usage(12_050, 120, 12_170, prompt_tokens_details=CACHED_DETAILS)
    writer.chunk(ChatCompletionChunk("c1", 0, "claude", [], service_tier="flex"))
    writer.chunk(ChatCompletionChunk("c1", 0, "claude", [], usage=usage))
    final = writer.finish()[-1][1]["response"]
    read = metered(json.dumps(final).encode())
    want = Tokens(input=12_050, output=120, cached=10_000, cache_write=2_000, cache_write_1h=500)
    assert read is not None
    assert (read.tokens, read.tier) == (want, "flex")
