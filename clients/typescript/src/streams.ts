// Streamed calls: a chat completion's chunks, or the Responses API's named events, each
// message checked against its place (`Llm-Seq`); a try lost or refused 503 before its first
// chunk is sent again within the deadline (./exchange.ts), never once a chunk came.
import type { Msg } from "nats";

import { HEADERS, INFERRED } from "./contract.js";
import { DeadlineError, StreamError, UnavailableError, fromReply, type APIError } from "./errors.js";
import { backOff, decode, noResponders, status, type Exchange, type Tries } from "./exchange.js";
import type { StreamEvent } from "./responses.js";
import type { ChatCompletionChunk, StreamEnd } from "./types.js";

/**
 * Check a stream message's `Llm-Seq` against the position it should have (0, 1, 2 …): a gap
 * or a reorder throws StreamError. A message without one (keepalives carry none) passes.
 */
export function checkSeq(seq: string | undefined | null, expected: number): void {
  if (seq === undefined || seq === null || seq === "") return;
  const got = Number(seq);
  if (got === expected) return;
  throw new StreamError(
    Number.isInteger(got) && got < expected
      ? `stream message ${got} came again or out of order (expected ${expected})`
      : `stream message ${expected} missing (got ${seq})`,
  );
}

/**
 * A streamed call: iterate its items (chat chunks, or named events); `cancel()` stops it
 * upstream. `item` reads a chunk message's item (`null`: none to yield).
 */
export class ItemStream<T> implements AsyncIterable<T> {
  /** The `Llm-Stream: end` totals, once the stream finished. */
  end: StreamEnd | null = null;
  private consumed = false;
  private exchange: Exchange;

  /** `open()` publishes a try (the first at once); `tries` says how many may follow. */
  constructor(
    private readonly open: () => Exchange,
    private readonly tries: Tries,
    private readonly item: (msg: Msg) => T | null,
  ) {
    this.exchange = open();
  }

  /** The request's `X-Request-Id` (every try carries it). */
  get requestId(): string {
    return this.exchange.requestId;
  }

  /** The reply inbox of the current try (a cancel must name it as its reply subject). */
  get inbox(): string {
    return this.exchange.inbox;
  }

  /** Stop the stream: the upstream call is cancelled, the iteration ends. */
  cancel(): void {
    this.exchange.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    if (this.consumed) throw new StreamError("a stream is iterated once");
    this.consumed = true;
    let started = false;
    let expected = 0;
    const last = (msg: Msg) => noResponders(msg) || msg.headers?.get(HEADERS.STREAM) !== "chunk";
    for (let attempt = 1; ; attempt += 1) {
      if (attempt > 1) this.exchange = this.open();
      const exchange = this.exchange;
      let failed: APIError | null = null;
      try {
        for await (const msg of exchange.messages(last)) {
          if (noResponders(msg)) {
            const { code, status: code503 } = INFERRED.NO_BROKER;
            failed = new UnavailableError(code503, "no broker is running", { code, requestId: this.requestId });
            break;
          }
          const kind = msg.headers?.get(HEADERS.STREAM) ?? "";
          if (kind !== "chunk" && kind !== "end") {
            // an error during the stream, or the request refused before it began
            const error = fromReply(status(msg, 500), msg.data, msg.headers);
            if (started || error.status !== 503) throw error;
            failed = error;
            break;
          }
          checkSeq(msg.headers?.get(HEADERS.SEQ), expected);
          expected += 1;
          started = true;
          if (kind === "end") {
            this.end = msg.data.length ? decode<StreamEnd>(msg.data) : {};
            return;
          }
          const item = this.item(msg);
          if (item !== null) yield item;
        }
      } catch (error) {
        // a try lost before its first chunk is tried again (and left for it to join)
        if (!(exchange.lost && !started && error instanceof DeadlineError)) throw error;
        failed = error;
      }
      if (failed === null) return; // cancelled
      await backOff(this.tries, attempt, failed);
    }
  }
}

/** A streamed chat completion: its typed chunks. */
export class ChatStream extends ItemStream<ChatCompletionChunk> {
  constructor(open: () => Exchange, tries: Tries) {
    super(open, tries, (msg) => decode<ChatCompletionChunk>(msg.data));
  }
}

/** A stream of named events (the Responses API's): each event's name (`Llm-Event`) and JSON. */
export class EventStream extends ItemStream<StreamEvent> {
  constructor(open: () => Exchange, tries: Tries) {
    super(open, tries, (msg) =>
      msg.data.length ? { event: msg.headers?.get(HEADERS.EVENT) ?? "", data: decode<StreamEvent["data"]>(msg.data) } : null,
    );
  }
}
