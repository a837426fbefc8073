// The client against a real stack (llm-edge up, mock providers): chat, Anthropic messages, stream,
// errors, cancel, a slow answer, batches (results and files read through the broker), embeddings,
// responses (whole, streamed, stored: read, listed, deleted); and against a bare NATS server of
// 1 MiB messages with a stand-in broker: keepalives, silence, sizes, stream order, files read
// piece by piece. No assertion is timed; every wait is bounded.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { connect, headers as natsHeaders, type Msg, type NatsConnection } from "nats";

import {
  APIError,
  BadRequestError,
  DeadlineError,
  EdgeClient,
  EdgeError,
  HEADER_ROOM,
  InternalServerError,
  NotFoundError,
  RateLimitError,
  StreamError,
  UnavailableError,
  checkSeq,
  embeddingVector,
  fromReply,
  outputText,
  type BatchObject,
  type ChatBody,
  type FileRequest,
  type ResponseObject,
  type StreamEvent,
} from "../src/index.js";
import { THINKING_MS, startNatsServer, startStack, type NatsServer, type Stack } from "./stack.js";

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

describe("Llm-Seq: 0, 1, 2 … or a StreamError", () => {
  test("the expected position passes, and so does a message without one", () => {
    checkSeq("0", 0);
    checkSeq("7", 7);
    checkSeq(undefined, 3);
    checkSeq("", 3);
  });

  test("a gap, a repeat, a reorder or a number that is none throws", () => {
    assert.throws(() => checkSeq("2", 1), (error: unknown) => error instanceof StreamError && /1 missing/.test(error.message));
    assert.throws(() => checkSeq("0", 1), /out of order/);
    assert.throws(() => checkSeq("x", 0), StreamError);
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

  test("slow is not lost: an answer slower than the attempt timeout arrives, one upstream call each", async () => {
    // thinking-model is silent for THINKING_MS before its first byte; the attempt timeout is a
    // third of that: only the broker's keepalives tell this call from a lost one
    const patient = new EdgeClient(client.nc, { attemptTimeoutMs: THINKING_MS / 3 });
    const before = await upstreamCalls(stack, "thinker");
    const think = (text: string): ChatBody => ({ model: "thinking-model", messages: [{ role: "user", content: text }] });
    const started = Date.now();
    const [whole, streamed] = await Promise.all([
      patient.chat(think("whole, slowly")),
      (async () => {
        let text = "";
        for await (const chunk of patient.stream(think("streamed, slowly"))) text += chunk.choices[0]?.delta.content ?? "";
        return text;
      })(),
    ]);
    assert.ok(Date.now() - started >= THINKING_MS, "the upstream was as slow as configured");
    assert.match(whole.choices[0].message.content ?? "", /: whole, slowly$/);
    assert.match(streamed, /: streamed, slowly$/);
    await waitFor(async () => (await upstreamCalls(stack, "thinker")) >= before + 2, "both upstream calls to be counted");
    assert.equal(await upstreamCalls(stack, "thinker"), before + 2);
  });

  test("an 8 MiB request fits the stack's server (64 MiB messages)", async () => {
    const big = "x".repeat(8 * 1024 * 1024);
    assert.ok((client.nc.info?.max_payload ?? 0) > big.length + HEADER_ROOM);
    const reply = await client.chat({ ...hello, messages: [{ role: "user", content: big }] }, { cacheControl: "no-store" });
    assert.match(reply.choices[0].message.content ?? "", /^Mock reply \[[0-9a-f]{8}\]: x+$/);
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

  test("a batch of 3 MiB lines: its events on the tenant's subject, its results and its 9 MiB input file through the broker", async () => {
    const events: BatchObject[] = [];
    const sub = client.nc.subscribe("llm.batch.events.default.>", {
      callback: (error, msg) => error || events.push(JSON.parse(new TextDecoder().decode(msg.data)) as BatchObject),
    });
    const lines = ["x", "y", "z"].map((id) => ({
      custom_id: id,
      method: "POST",
      url: "/v1/chat/completions",
      body: { ...hello, messages: [{ role: "user" as const, content: `${id} ${"p".repeat(3 * 1024 * 1024)}` }] },
    }));
    try {
      const batch = await client.batches.submit(lines);
      const done = await client.batches.wait(batch.id, { timeoutMs: 30_000 });
      assert.equal(done.status, "completed");
      const results = await client.batches.results(done);
      assert.deepEqual(results.map((r) => [r.custom_id, r.response?.status_code]).sort(), [
        ["x", 200], ["y", 200], ["z", 200],
      ]);
      const input = await client.batches.content(done.input_file_id);
      assert.equal(input.length, (await client.batches.file(done.input_file_id)).bytes);
      assert.ok(input.length > 9 * 1024 * 1024, "more than two pieces");
      const parsed = new TextDecoder().decode(input).split("\n").filter(Boolean).map((line) => JSON.parse(line) as unknown);
      assert.deepEqual(parsed, lines);
      await client.nc.flush();
      assert.ok(events.some((b) => b.id === batch.id && b.status === "completed"), "the final event on llm.batch.events.default.<id>");
      await assert.rejects(client.batches.file("file-no-such-file"), NotFoundError);
      await assert.rejects(client.batches.content("file-no-such-file"), NotFoundError);
    } finally {
      sub.unsubscribe();
    }
  });

  test("embeddings of two inputs: a unit vector each, of the dimensions asked, in either encoding", async () => {
    const request = { model: "gpt-4o-mini", input: ["first text", "second text"], dimensions: 64 };
    const list = await client.embeddings(request);
    assert.equal(list.data.length, 2);
    assert.deepEqual(list.data.map((item) => item.index), [0, 1]);
    assert.ok((list.usage.prompt_tokens ?? 0) > 0);
    const vectors = list.data.map(embeddingVector);
    for (const vector of vectors) {
      assert.equal(vector.length, 64);
      assert.ok(Math.abs(Math.hypot(...vector) - 1) < 1e-5, "a unit vector");
    }
    assert.notDeepEqual(vectors[0], vectors[1]);
    const encoded = await client.embeddings({ ...request, encoding_format: "base64" });
    assert.equal(typeof encoded.data[0].embedding, "string");
    assert.deepEqual(encoded.data.map(embeddingVector), vectors);
  });

  test("responses answers a whole, stored response", async () => {
    const input = unique("Hello there");
    const response = await client.responses({ model: "gpt-4o-mini", input, instructions: "Be brief." });
    assert.equal(response.object, "response");
    assert.match(response.id, /^resp_/);
    assert.equal(response.status, "completed");
    assert.equal(response.output[0]?.role, "assistant");
    assert.ok(outputText(response).endsWith(`: ${input}`), outputText(response));
    assert.ok((response.usage?.output_tokens ?? 0) > 0);
    assert.equal(response.store, true);
  });

  test("streamResponses yields the events in order, ending with response.completed", async () => {
    const input = unique("stream me");
    const names: string[] = [];
    let text = "";
    let last: StreamEvent | undefined;
    for await (const event of client.streamResponses({ model: "gpt-4o-mini", input })) {
      assert.equal(event.data.type, event.event);
      assert.equal(event.data.sequence_number, names.length);
      names.push(event.event);
      if (event.event === "response.output_text.delta") text += String(event.data.delta);
      last = event;
    }
    assert.ok(names.length >= 5, names.join());
    assert.deepEqual(names.slice(0, 2), ["response.created", "response.in_progress"]);
    assert.equal(names.at(-1), "response.completed");
    const completed = last?.data.response as ResponseObject;
    assert.equal(completed.status, "completed");
    assert.equal(outputText(completed), text);
    assert.ok(text.endsWith(`: ${input}`), text);
  });

  test("a stored response is read, its input items listed, and deleted", async () => {
    const input = unique("keep me");
    const created = await client.responses({ model: "gpt-4o-mini", input });
    const stored = await client.response(created.id);
    assert.equal(stored.id, created.id);
    assert.deepEqual(stored.output, created.output);
    const items = await client.responseInputItems(created.id, { order: "asc" });
    assert.equal(items.data.length, 1);
    assert.equal(items.has_more, false);
    assert.equal(items.data[0].role, "user");
    assert.equal(items.data[0].content?.[0]?.text, input);
    assert.equal(items.first_id, items.data[0].id);
    await assert.rejects(client.cancelResponse(created.id), BadRequestError, "only background responses are cancelled");
    assert.deepEqual(await client.deleteResponse(created.id), { id: created.id, object: "response", deleted: true });
    await assert.rejects(client.response(created.id), NotFoundError);
    await assert.rejects(client.deleteResponse(created.id), NotFoundError);
  });

  test("streamResponse resumes a streamed background response after a sequence number", async () => {
    const live: StreamEvent[] = [];
    for await (const event of client.streamResponses({ model: "gpt-4o-mini", input: unique("run me behind"), background: true })) live.push(event);
    assert.ok(live.length >= 5, live.map((e) => e.event).join());
    assert.equal(live.at(-1)?.event, "response.completed");
    const created = live[0].data.response as ResponseObject;
    assert.equal(created.background, true);
    const resumed: StreamEvent[] = [];
    for await (const event of client.streamResponse(created.id, 1)) resumed.push(event);
    assert.deepEqual(resumed, live.slice(2));
    const plain = await client.responses({ model: "gpt-4o-mini", input: unique("not behind") });
    await assert.rejects(async () => {
      for await (const _ of client.streamResponse(plain.id)) assert.fail("no event expected");
    }, BadRequestError);
  });
});

/** A prompt no cache has seen. */
function unique(text: string): string {
  return `${text} ${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
}

/** The stand-in broker's script: what it does with a request, by the request's first message. */
type Script = "think" | "think-stream" | "silent" | "gap" | "reorder" | "lost-once" | "busy-once" | "fails-after-a-chunk";

/**
 * A bare NATS server of 1 MiB messages, and a stand-in broker on it that answers `llm.chat` as
 * each request's script says (protocol cases a real broker never sends: a gap in a stream, a
 * broker that fell silent), recording every request and cancel it receives.
 */
describe("against a bare NATS server with a stand-in broker", () => {
  const MAX_PAYLOAD = 1024 * 1024;
  /** The attempt timeout of these tests: the stand-in thinks for three of it. */
  const SILENCE_MS = 600;
  let server: NatsServer;
  let broker: NatsConnection;
  let client: EdgeClient;
  const requests: Msg[] = [];
  const cancels: string[] = [];
  const timers = new Set<NodeJS.Timeout>();

  const ask = (script: Script): ChatBody => ({ model: "m", messages: [{ role: "user", content: script }] });
  const idOf = (msg: Msg) => msg.headers?.get("X-Request-Id") ?? "";
  const requestsOf = (requestId: string) => requests.filter((msg) => idOf(msg) === requestId);

  function reply(request: Msg, values: Record<string, string>, body: unknown = null): void {
    const hdrs = natsHeaders();
    hdrs.set("X-Request-Id", idOf(request));
    for (const [name, value] of Object.entries(values)) hdrs.set(name, value);
    const data = body === null ? new Uint8Array() : new TextEncoder().encode(JSON.stringify(body));
    broker.publish(request.reply ?? "", data, { headers: hdrs });
  }

  const chunk = (content: string) => ({
    id: "c", object: "chat.completion.chunk", created: 0, model: "m",
    choices: [{ index: 0, delta: { content }, finish_reason: null }],
  });
  const completion = (content: string) => ({
    id: "c", object: "chat.completion", created: 0, model: "m",
    choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
  });

  /** Keepalives every SILENCE_MS / 4 for three attempt timeouts, then `answer()`. */
  function think(request: Msg, answer: () => void): void {
    const ticking = setInterval(() => reply(request, { "Llm-Stream": "keepalive" }), SILENCE_MS / 4);
    const done = setTimeout(() => {
      clearInterval(ticking);
      timers.delete(done);
      answer();
    }, SILENCE_MS * 3);
    timers.add(done).add(ticking);
  }

  /** A whole answer, or a stream of one chunk per word and its end. */
  function answer(request: Msg, stream: boolean, words: string[]): void {
    if (!stream) return reply(request, {}, completion(words.join("")));
    words.forEach((word, seq) => reply(request, { "Llm-Stream": "chunk", "Llm-Seq": String(seq) }, chunk(word)));
    reply(request, { "Llm-Stream": "end", "Llm-Seq": String(words.length) }, { finish_reason: "stop" });
  }

  function serve(request: Msg): void {
    requests.push(request);
    const body = JSON.parse(new TextDecoder().decode(request.data)) as ChatBody;
    const script = body.messages[0].content as Script;
    const attempt = requestsOf(idOf(request)).length;
    // the first try's broker died with it
    if (script === "lost-once" && attempt > 1) answer(request, body.stream === true, ["second ", "try"]);
    if (script === "busy-once") {
      if (attempt > 1) answer(request, body.stream === true, ["second ", "try"]);
      else reply(request, { "Llm-Status": "503", "Retry-After": "0" }, { error: { type: "t", code: "no_provider_available", message: "busy" } });
    }
    if (script === "fails-after-a-chunk") {
      reply(request, { "Llm-Stream": "chunk", "Llm-Seq": "0" }, chunk("one "));
      reply(request, { "Llm-Stream": "error", "Llm-Seq": "1", "Llm-Status": "503" }, { error: { type: "t", code: "unavailable", message: "upstream broke" } });
    }
    if (script === "think") think(request, () => reply(request, {}, completion("thought it over")));
    if (script === "think-stream") {
      think(request, () => {
        reply(request, { "Llm-Stream": "chunk", "Llm-Seq": "0" }, chunk("thought "));
        reply(request, { "Llm-Stream": "keepalive" }); // late, after the answer began: ignored too
        reply(request, { "Llm-Stream": "chunk", "Llm-Seq": "1" }, chunk("it over"));
        reply(request, { "Llm-Stream": "end", "Llm-Seq": "2" }, { finish_reason: "stop" });
      });
    }
    if (script === "gap") {
      reply(request, { "Llm-Stream": "chunk", "Llm-Seq": "0" }, chunk("one "));
      reply(request, { "Llm-Stream": "chunk", "Llm-Seq": "2" }, chunk("three"));
      reply(request, { "Llm-Stream": "end", "Llm-Seq": "3" }, { finish_reason: "stop" });
    }
    if (script === "reorder") {
      reply(request, { "Llm-Stream": "chunk", "Llm-Seq": "1" }, chunk("two "));
      reply(request, { "Llm-Stream": "chunk", "Llm-Seq": "0" }, chunk("one "));
      reply(request, { "Llm-Stream": "end", "Llm-Seq": "2" }, { finish_reason: "stop" });
    }
    // "silent": a broker that died with the request
  }

  /** Files the stand-in serves by offset: one of 3 MiB (three times max_payload) with its
   * digest, and one whose digest is another file's. */
  const bigFile = new Uint8Array(randomBytes(3 * MAX_PAYLOAD + 777));
  const files: Record<string, { data: Uint8Array; digest: string }> = {
    "file-big": { data: bigFile, digest: digestOf(bigFile) },
    "file-bad": { data: bigFile.slice(0, 5000), digest: digestOf(bigFile) },
  };

  function servePiece(request: Msg): void {
    const { id, offset = 0, length } = JSON.parse(new TextDecoder().decode(request.data)) as FileRequest;
    const file = files[id];
    if (!file) {
      reply(request, { "Llm-Status": "404" }, { error: { message: "no file", type: "not_found_error", code: "file_not_found", param: "id" } });
      return;
    }
    const end = Math.min(offset + Math.min(length ?? MAX_PAYLOAD, MAX_PAYLOAD - HEADER_ROOM), file.data.length);
    const hdrs = natsHeaders();
    hdrs.set("Llm-Status", "200");
    hdrs.set("Llm-File-Size", String(file.data.length));
    hdrs.set("Llm-File-Offset", String(offset));
    hdrs.set("Llm-File-Digest", file.digest);
    broker.publish(request.reply ?? "", file.data.slice(offset, end), { headers: hdrs });
  }

  before(async () => {
    server = await startNatsServer(MAX_PAYLOAD);
    broker = await connect({ servers: server.url, name: "stand-in-broker" });
    broker.subscribe("llm.chat", { callback: (error, msg) => error || serve(msg) });
    broker.subscribe("llm.batch.file.content", { callback: (error, msg) => error || servePiece(msg) });
    broker.subscribe("llm.cancel", { callback: (error, msg) => error || cancels.push(new TextDecoder().decode(msg.data)) });
    await broker.flush();
    client = await EdgeClient.connect(server.url, { attemptTimeoutMs: SILENCE_MS, deadlineMs: 20_000, attempts: 3, backoffMs: 0 });
  });

  after(async () => {
    for (const timer of timers) clearTimeout(timer);
    await client?.close();
    await broker?.close();
    await server?.stop();
  });

  test("a body over the server's max_payload is refused 413 before anything is published", async () => {
    const content = "x".repeat(2 * 1024 * 1024);
    const big: ChatBody = { model: "m", messages: [{ role: "user", content }] };
    assert.equal(client.nc.info?.max_payload, MAX_PAYLOAD);
    const refused = (error: unknown) => {
      assert.ok(error instanceof BadRequestError);
      assert.equal(error.status, 413);
      assert.equal(error.code, "request_too_large");
      assert.match(error.detail, new RegExp(`takes ${MAX_PAYLOAD - HEADER_ROOM} \\(its max_payload, ${MAX_PAYLOAD}, less ${HEADER_ROOM}`));
      assert.ok(error.requestId);
      return true;
    };
    await assert.rejects(client.chat(big), refused);
    await assert.rejects(client.messages({ model: "m", max_tokens: 16, messages: [{ role: "user", content }] }), refused);
    await assert.rejects(async () => {
      for await (const _ of client.stream(big)) assert.fail("no chunk expected");
    }, refused);
    await assert.rejects(client.call("llm.chat", new Uint8Array(MAX_PAYLOAD)), refused);
    await client.nc.flush();
    await broker.flush();
    assert.equal(requests.length, 0, "nothing was published");
    assert.deepEqual(cancels, []);
  });

  test("a file three times max_payload comes back whole and byte-identical, piece by piece", async () => {
    const data = await client.batches.content("file-big");
    assert.ok(data.length > 3 * MAX_PAYLOAD);
    assert.ok(Buffer.from(data).equals(Buffer.from(bigFile)));
    await assert.rejects(client.batches.content("file-nope"), NotFoundError);
  });

  test("a file whose bytes do not match its digest throws StreamError", async () => {
    await assert.rejects(client.batches.content("file-bad"), (error: unknown) => error instanceof StreamError && /digest/.test(error.message));
  });

  test("keepalives are not the answer: they restart the silence timer of a whole call", async () => {
    const reply = await client.chat(ask("think"), { requestId: "ts-think" });
    assert.equal(reply.choices[0].message.content, "thought it over");
    const sent = requestsOf("ts-think");
    assert.equal(sent.length, 1, "a slow call is not sent again");
    assert.equal(sent[0].headers?.get("Llm-Keepalive-Ms"), "250"); // a quarter of 600 ms, at least 250
    assert.ok(!cancels.includes("ts-think"));
  });

  test("keepalives are not yielded by a stream, before or after its first chunk", async () => {
    const stream = client.stream(ask("think-stream"), { requestId: "ts-think-stream" });
    const texts: string[] = [];
    for await (const chunk of stream) texts.push(chunk.choices[0]?.delta.content ?? "");
    assert.deepEqual(texts, ["thought ", "it over"]);
    assert.equal(stream.end?.finish_reason, "stop");
    assert.equal(requestsOf("ts-think-stream").length, 1);
    assert.ok(requestsOf("ts-think-stream")[0].headers?.get("Llm-Keepalive-Ms"));
  });

  test("silence is lost: no answer and no keepalive for attemptTimeoutMs, on every try, is a DeadlineError", async () => {
    const lost = (error: unknown) => {
      assert.ok(error instanceof DeadlineError);
      assert.equal(error.status, 504);
      assert.match(error.detail, /no answer and no keepalive for 600 ms/);
      return true;
    };
    const started = Date.now();
    await assert.rejects(client.chat(ask("silent"), { requestId: "ts-silent" }), lost);
    await assert.rejects(async () => {
      for await (const _ of client.stream(ask("silent"), { requestId: "ts-silent-stream" })) assert.fail("no chunk");
    }, lost);
    assert.ok(Date.now() - started < 10_000, "well before the 20 s deadline");
    for (const id of ["ts-silent", "ts-silent-stream"]) {
      assert.equal(requestsOf(id).length, 3, `${id}: one request per try`);
      assert.ok(requestsOf(id).every((msg) => msg.headers?.get("Llm-Idempotent") === "1"));
    }
    // a lost try of a call that may be tried again is left to the next try: never cancelled
    await client.nc.flush();
    await broker.flush();
    assert.ok(!cancels.includes("ts-silent") && !cancels.includes("ts-silent-stream"));
    // without tries again a lost stream is nobody's: it is cancelled
    const alone = new EdgeClient(client.nc, { attemptTimeoutMs: SILENCE_MS, deadlineMs: 20_000, attempts: 1 });
    await assert.rejects(async () => {
      for await (const _ of alone.stream(ask("silent"), { requestId: "ts-silent-alone" })) assert.fail("no chunk");
    }, lost);
    assert.equal(requestsOf("ts-silent-alone")[0].headers?.get("Llm-Idempotent"), "");
    await waitFor(async () => cancels.includes("ts-silent-alone"), "the lost stream's cancel");
  });

  test("a try lost before its answer is sent again under its id, marked Llm-Idempotent, and left running", async () => {
    const whole = await client.chat(ask("lost-once"), { requestId: "ts-lost-once" });
    assert.equal(whole.choices[0].message.content, "second try");
    let text = "";
    for await (const chunk of client.stream(ask("lost-once"), { requestId: "ts-lost-once-stream" })) text += chunk.choices[0]?.delta.content ?? "";
    assert.equal(text, "second try");
    for (const id of ["ts-lost-once", "ts-lost-once-stream"]) {
      const sent = requestsOf(id);
      assert.equal(sent.length, 2, `${id}: two tries`);
      assert.ok(sent.every((msg) => msg.headers?.get("Llm-Idempotent") === "1"));
      const [first, second] = sent.map((msg) => Number(msg.headers?.get("Llm-Timeout-Ms")));
      assert.ok(second < first && first <= 20_000, `${id}: Llm-Timeout-Ms ${first} then ${second}: what is left`);
    }
    await client.nc.flush();
    await broker.flush();
    assert.ok(!cancels.includes("ts-lost-once") && !cancels.includes("ts-lost-once-stream"), "the lost try is left for the next to join");
  });

  test("a 503 before a stream's first chunk is tried again, one after it is thrown", async () => {
    let text = "";
    for await (const chunk of client.stream(ask("busy-once"), { requestId: "ts-busy-once" })) text += chunk.choices[0]?.delta.content ?? "";
    assert.equal(text, "second try");
    assert.equal(requestsOf("ts-busy-once").length, 2);
    const seen: string[] = [];
    await assert.rejects(async () => {
      for await (const chunk of client.stream(ask("fails-after-a-chunk"), { requestId: "ts-after-a-chunk" })) seen.push(chunk.choices[0]?.delta.content ?? "");
    }, UnavailableError);
    assert.deepEqual(seen, ["one "]);
    assert.equal(requestsOf("ts-after-a-chunk").length, 1, "a stream that began is never sent again");
  });

  test("a gap or a reorder in a stream throws StreamError and cancels it", async () => {
    const seen: string[] = [];
    await assert.rejects(async () => {
      for await (const chunk of client.stream(ask("gap"), { requestId: "ts-gap" })) seen.push(chunk.choices[0]?.delta.content ?? "");
    }, (error: unknown) => error instanceof StreamError && /stream message 1 missing/.test(error.message));
    assert.deepEqual(seen, ["one "]);
    await assert.rejects(async () => {
      for await (const _ of client.stream(ask("reorder"), { requestId: "ts-reorder" })) assert.fail("no chunk before 0");
    }, StreamError);
    await waitFor(async () => cancels.includes("ts-gap") && cancels.includes("ts-reorder"), "the broken streams' cancels");
  });
});

/** A file's digest as the object store keeps it: `SHA-256=<base64url>`. */
function digestOf(data: Uint8Array): string {
  return `SHA-256=${createHash("sha256").update(data).digest("base64url")}=`;
}

/** The upstream calls a provider's workers made (their `/metrics`). */
async function upstreamCalls(stack: Stack, provider: string): Promise<number> {
  const text = await (await fetch(`${stack.httpUrl}/metrics`)).text();
  const line = new RegExp(`^llm_edge_worker_upstream_seconds_count\\{provider="${provider}"\\} (\\S+)$`, "m").exec(text);
  return line ? Number(line[1]) : 0;
}

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
