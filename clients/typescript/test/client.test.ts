// The client against a real stack (llm-edge up, mock providers): chat, Anthropic messages, stream,
// errors, cancel, a small batch. No assertion is timed; every wait is bounded.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  APIError,
  BadRequestError,
  DeadlineError,
  EdgeClient,
  EdgeError,
  InternalServerError,
  NotFoundError,
  RateLimitError,
  UnavailableError,
  fromReply,
  type BatchObject,
  type ChatBody,
} from "../src/index.js";
import { startStack, type Stack } from "./stack.js";

const hello: ChatBody = { model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello there" }] };

describe("errors, keyed by Llm-Status and the envelope's code", () => {
  const envelope = (code: string) =>
    new TextEncoder().encode(JSON.stringify({ error: { type: "t", code, message: "m", param: "p" } }));
  const hdrs = (values: Record<string, string>) => ({ get: (name: string) => values[name] ?? "" });

  test("each status has the class edge_client/errors.py gives it", () => {
    const cases: [number, string][] = [
      [400, "BadRequestError"], [401, "AuthenticationError"], [402, "BudgetExceeded"],
      [403, "PermissionDeniedError"], [404, "NotFoundError"], [408, "DeadlineError"],
      [409, "ConflictError"], [413, "BadRequestError"], [429, "RateLimitError"],
      [431, "BadRequestError"], [500, "InternalServerError"], [502, "InternalServerError"],
      [503, "UnavailableError"], [504, "DeadlineError"], [418, "APIError"],
    ];
    for (const [status, name] of cases) {
      const error = fromReply(status, envelope("x"));
      assert.equal(error.constructor.name, name, `status ${status}`);
      assert.ok(error instanceof APIError && error instanceof EdgeError);
    }
  });

  test("the envelope and the headers give the context", () => {
    const error = fromReply(429, envelope("rate_limited"), hdrs({ "Retry-After": "2", "X-Request-Id": "r1" }));
    assert.ok(error instanceof RateLimitError);
    assert.deepEqual(
      [error.status, error.code, error.detail, error.param, error.requestId, error.retryAfter],
      [429, "rate_limited", "m", "p", "r1", 2],
    );
    const raw = fromReply(502, new TextEncoder().encode("not json"));
    assert.ok(raw instanceof InternalServerError);
    assert.equal(raw.detail, "not json");
    assert.equal(raw.code, null);
  });
});

describe("against a real stack", () => {
  let stack: Stack;
  let client: EdgeClient;

  before(async () => {
    stack = await startStack();
    client = await EdgeClient.connect(stack.natsUrl, { deadlineMs: 30_000 });
  });

  after(async () => {
    await client?.close();
    await stack?.stop();
  });

  test("chat returns a typed ChatCompletion", async () => {
    const reply = await client.chat(hello, { requestId: "ts-chat-1" });
    assert.equal(reply.model, "gpt-4o-mini");
    assert.match(reply.choices[0].message.content ?? "", /^Mock reply \[[0-9a-f]{8}\]: Hello there$/);
    assert.ok((reply.usage?.total_tokens ?? 0) > 0);
  });

  test("messages answers in the Anthropic shape", async () => {
    const message = await client.messages({ model: "gpt-4o-mini", max_tokens: 64, messages: [{ role: "user", content: "Hello there" }] });
    assert.equal(message.type, "message");
    assert.equal(message.role, "assistant");
    assert.match(message.content[0]?.text ?? "", /: Hello there$/);
    assert.ok(message.usage.output_tokens > 0);
  });

  test("stream yields the chunks in order, then the end's totals", async () => {
    const whole = await client.chat(hello);
    const stream = client.stream(hello, { cacheControl: "no-cache" });
    let text = "";
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      assert.equal(chunk.object, "chat.completion.chunk");
      text += chunk.choices[0]?.delta.content ?? "";
    }
    assert.ok(chunks > 2);
    assert.equal(text, whole.choices[0].message.content);
    assert.equal(stream.end?.finish_reason, "stop");
  });

  test("failures throw the typed errors, whole or streamed", async () => {
    const unknown = { ...hello, model: "no-such-model" };
    await assert.rejects(client.chat(unknown), (error: unknown) => {
      assert.ok(error instanceof NotFoundError);
      assert.equal(error.status, 404);
      assert.equal(error.code, "model_not_found");
      assert.ok(error.requestId);
      return true;
    });
    await assert.rejects(async () => {
      for await (const _ of client.stream(unknown)) assert.fail("no chunk expected");
    }, NotFoundError);
    await assert.rejects(client.chat({ ...hello, messages: [] as unknown as ChatBody["messages"] }), BadRequestError);
    await assert.rejects(client.call("llm.nobody.serves.this", new Uint8Array()), (error: unknown) => {
      assert.ok(error instanceof UnavailableError);
      assert.equal(error.code, "no_broker");
      return true;
    });
  });

  test("a deadline bounds a call", async () => {
    const waiting = client.stream({ ...hello, model: "slow-model" }, { deadlineMs: 300 });
    await assert.rejects(async () => {
      for await (const _ of waiting);
    }, DeadlineError);
  });

  test("cancel stops the upstream call of a stream", async () => {
    // slow-model sends a word every 10 minutes: only a cancel can end its call within the test
    const stream = client.stream({ ...hello, model: "slow-model" }, { deadlineMs: 600_000 });
    const iterator = stream[Symbol.asyncIterator]();
    const first = await iterator.next(); // the role chunk: the upstream call is running
    assert.equal(first.done, false);
    assert.equal(await inFlight(client), 1);
    stream.cancel(); // llm.cancel with the stream's inbox as the reply
    assert.equal((await iterator.next()).done, true);
    await waitFor(async () => (await inFlight(client)) === 0, "the cancelled call to end");
  });

  test("an aborted signal cancels the stream too", async () => {
    const abort = new AbortController();
    const stream = client.stream({ ...hello, model: "slow-model" }, { signal: abort.signal, deadlineMs: 600_000 });
    await assert.rejects(async () => {
      for await (const _ of stream) abort.abort(new Error("enough"));
    }, /enough/);
    await waitFor(async () => (await inFlight(client)) === 0, "the aborted call to end");
  });

  test("a small batch runs to completion, with events", async () => {
    const lines = ["a", "b", "c"].map((id) => ({
      custom_id: id,
      method: "POST",
      url: "/v1/chat/completions",
      body: { ...hello, messages: [{ role: "user", content: `line ${id}` }] },
    }));
    const batch = await client.batches.submit(lines, { metadata: { origin: "ts" } });
    assert.match(batch.id, /^batch_/);
    const seen: BatchObject[] = [];
    const done = await client.batches.wait(batch.id, { timeoutMs: 30_000, onProgress: (b) => seen.push(b) });
    assert.equal(done.status, "completed");
    assert.equal(done.request_counts?.completed, 3);
    assert.equal(seen.at(-1)?.status, "completed");
    const results = await client.batches.results(done);
    assert.deepEqual(results.map((r) => [r.custom_id, r.response?.status_code]).sort(), [
      ["a", 200], ["b", 200], ["c", 200],
    ]);
    assert.equal((await client.batches.get(batch.id)).status, "completed");
  });
});

/** The broker's requests in flight (llm.admin.status); the tests run one at a time. */
async function inFlight(client: EdgeClient): Promise<number> {
  const reply = await client.call("llm.admin.status", new Uint8Array());
  return (JSON.parse(new TextDecoder().decode(reply.data)) as { in_flight: number }).in_flight;
}

/** Poll until `done` (bounded: the test fails after 20 s). */
async function waitFor(done: () => Promise<boolean>, what: string): Promise<void> {
  const until = Date.now() + 20_000;
  while (!(await done())) {
    if (Date.now() > until) assert.fail(`waited 20 s for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
