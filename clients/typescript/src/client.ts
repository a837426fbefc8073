// A typed client for the broker's NATS API: chat, streams, cancel, Anthropic messages,
// embeddings, the OpenAI Responses API and batches.
//
//   const client = await EdgeClient.connect("nats://127.0.0.1:4222");
//   const reply = await client.chat({ model: "gpt-4o-mini", messages: [...] });
//
// Every call has a deadline (`deadlineMs`, sent as `Llm-Timeout-Ms`; 600 s unless named, the
// openai SDK's). A call that finds no broker (NATS no-responders), stays silent for
// `attemptTimeoutMs` (its request or reply was lost) or is answered 503 is tried again within
// its deadline under the same `X-Request-Id`, marked `Llm-Idempotent: 1`: every try is
// answered from one upstream call, whichever broker it reaches. A lost try is left running
// for the next to join. A stream is tried again so only before its first chunk.
//
// Slow is not lost: chat and messages calls and streams ask their broker for keepalives
// (`Llm-Keepalive-Ms`), empty `Llm-Stream: keepalive` messages it sends while the answer has
// not begun. They are never taken for the answer; each restarts the attempt's silence timer.
// An attempt is taken for lost only after `attemptTimeoutMs` (30 s) of silence (no answer, no
// keepalive), so a reasoning model thinking for minutes is waited for up to the deadline and
// never sent again. Failures throw the errors of ./errors.ts. Header and subject names are
// ./contract.ts's, generated from docs/asyncapi.json.
import { connect, headers as natsHeaders, type ConnectionOptions, type Msg, type MsgHdrs, type NatsConnection } from "nats";

import { Batches } from "./batches.js";
import { HEADERS, HEADER_ROOM, INFERRED, SUBJECTS } from "./contract.js";
import { BadRequestError, DeadlineError, UnavailableError, fromReply, type APIError } from "./errors.js";
import {
  BACKOFF_MS,
  Exchange,
  MAX_BACKOFF_MS,
  backOff,
  decode,
  encoder,
  json,
  noResponders,
  status,
  type Tries,
} from "./exchange.js";
import type {
  EmbeddingsBody,
  InputItemList,
  InputItemsQuery,
  ResponseDeleted,
  ResponseObject,
  ResponsesBody,
} from "./responses.js";
import { ChatStream, EventStream } from "./streams.js";
import type { ChatCompletion, ChatRequest, EmbeddingList, MessagesRequest, ModelList } from "./types.js";

export { BACKOFF_MS, MAX_BACKOFF_MS, MAX_RETRY_AFTER_MS, json } from "./exchange.js";
export { ChatStream, EventStream, ItemStream, checkSeq } from "./streams.js";

/** A call's time budget when neither the call nor the client names one: the openai SDK's
 * (minutes to a reasoning model's first token are normal; keepalives tell slow from lost). */
export const DEFAULT_DEADLINE_MS = 600_000;
/** The longest silence (no answer, no keepalive) before an attempt is taken for lost. */
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 30_000;
/** How often brokers are asked for a keepalive while an answer has not begun (at most: a
 * shorter `attemptTimeoutMs` asks for a quarter of it). */
export const KEEPALIVE_MS = 5_000;
/** The shortest keepalive interval brokers send at. */
export const MIN_KEEPALIVE_MS = 250;
/** The subject cancels are published on. */
export const CANCEL_SUBJECT = SUBJECTS.CANCEL;

export interface ClientOptions {
  /** The tenant's key, sent as `Authorization: Bearer <key>`. */
  apiKey?: string;
  /** Publish on the tenant's own subjects (`llm.tenant.<tenant>.chat`) instead. */
  tenant?: string;
  /** The cache namespace of every call (a call may name its own). */
  namespace?: string;
  /** Every call's time budget unless the call names one (600 s). */
  deadlineMs?: number;
  /**
   * The longest silence before an attempt's answer begins (no answer and no keepalive; 30 s)
   * after which it is taken for lost and fails with a DeadlineError. Keepalives restart it,
   * so a slow answer is waited for up to the deadline.
   */
  attemptTimeoutMs?: number;
  /** The keepalive interval chat and messages calls ask for (5 s, or a quarter of a shorter
   * `attemptTimeoutMs`, at least 250 ms). */
  keepaliveMs?: number;
  /**
   * Tries of a call within its deadline (4): a try that found no broker, stayed silent for
   * `attemptTimeoutMs` or was answered 503 (a stream: before its first chunk) is sent again.
   * With more than one, calls are marked `Llm-Idempotent: 1`.
   */
  attempts?: number;
  /** The first wait between tries, doubled each time with full jitter (250 ms). */
  backoffMs?: number;
  /** The longest wait between tries (2 s; a `Retry-After` may ask for up to 10 s). */
  maxBackoffMs?: number;
  /** Prefix of reply inboxes: the one this NATS user may subscribe to. */
  inboxPrefix?: string;
}

export interface CallOptions {
  deadlineMs?: number;
  /** `no-cache`, `no-store` or `max-age=N`. */
  cacheControl?: string;
  namespace?: string;
  requestId?: string;
  traceparent?: string;
  /** Aborting cancels the call upstream (a cancel on `llm.cancel`) and rejects it. */
  signal?: AbortSignal;
}

/** A chat request: the generated `ChatRequest` (the client sets `stream`). */
export type ChatBody = Omit<ChatRequest, "stream"> & { stream?: boolean };

/** An Anthropic Messages request: the generated `MessagesRequest` (whole: no `stream`). */
export type MessagesBody = Omit<MessagesRequest, "stream">;

/** One content block of an Anthropic `message` (`text`, `tool_use`, `thinking` ...). */
export interface ContentBlock {
  type: string;
  text?: string;
  [field: string]: unknown;
}

/** An Anthropic `message`, as the Messages API answers it. */
export interface AnthropicMessage {
  id: string;
  type: "message";
  role: "assistant";
  model: string;
  content: ContentBlock[];
  stop_reason: string | null;
  stop_sequence?: string | null;
  usage: { input_tokens: number; output_tokens: number; [field: string]: unknown };
}

let sequence = 0;
function newRequestId(): string {
  sequence += 1;
  return `ts-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}-${sequence}`;
}

/** Chat, streams, cancel, messages, embeddings, responses, models and batches over a NATS
 * connection. */
export class EdgeClient {
  readonly batches: Batches;
  readonly inboxPrefix: string;
  private owned = false;

  constructor(
    readonly nc: NatsConnection,
    private readonly options: ClientOptions = {},
  ) {
    this.inboxPrefix = options.inboxPrefix ?? "_INBOX";
    this.batches = new Batches(this);
  }

  /** Open a NATS connection of the client's own (closed by `close()`). */
  static async connect(
    servers: string | string[],
    options: ClientOptions = {},
    connection: Partial<ConnectionOptions> = {},
  ): Promise<EdgeClient> {
    const nc = await connect({ servers, name: "edge-client-ts", ...connection });
    const client = new EdgeClient(nc, options);
    client.owned = true;
    return client;
  }

  /** Drain and close the connection if the client opened it. */
  async close(): Promise<void> {
    if (this.owned && !this.nc.isClosed()) await this.nc.drain();
  }

  /** A whole chat completion (`llm.chat`). */
  async chat(request: ChatBody, call: CallOptions = {}): Promise<ChatCompletion> {
    const body = { ...request, stream: false };
    delete (body as { stream_options?: unknown }).stream_options;
    return decode<ChatCompletion>((await this.whole(this.subject("chat"), json(body), call, true)).data);
  }

  /** A whole Anthropic Messages answer (`llm.messages`), retried as `chat()` is. */
  async messages(request: MessagesBody, call: CallOptions = {}): Promise<AnthropicMessage> {
    const body: MessagesRequest = { ...request };
    delete body.stream;
    const reply = await this.whole(this.subject("messages"), json(body), call, true);
    return decode<AnthropicMessage>(reply.data);
  }

  /**
   * A streamed chat completion: its typed chunks; leaving the loop early cancels it upstream.
   * A try that finds no broker, stays silent for `attemptTimeoutMs` (no keepalive either) or
   * is refused 503 before its first chunk is sent again under the same request id, marked
   * `Llm-Idempotent: 1`: the worker running the lost try takes the next in, so the upstream
   * is called once (a lost try is left running for it). Once a chunk came the stream is never
   * tried again; a missing or reordered message throws StreamError.
   */
  stream(request: ChatBody, call: CallOptions = {}): ChatStream {
    return this.streamCall(this.subject("chat"), json({ ...request, stream: true }), call);
  }

  /** A stream of any subject's chat chunks (the body's `stream` set), tried as `stream()` is. */
  streamCall(subject: string, body: Uint8Array, call: CallOptions = {}): ChatStream {
    return new ChatStream(...this.opener(subject, body, call));
  }

  /**
   * An OpenAI embeddings list (`llm.embeddings`), tried as `chat()` is. Each input is cached
   * on its own, so inputs embedded before are not sent upstream again; `embeddingVector()`
   * reads a vector in either encoding.
   */
  async embeddings(request: EmbeddingsBody, call: CallOptions = {}): Promise<EmbeddingList> {
    return decode<EmbeddingList>((await this.whole(this.subject("embeddings"), json(request), call, true)).data);
  }

  /**
   * A whole Responses API `response` (`llm.responses`), tried as `chat()` is: stored unless
   * the request says `store: false`; with `background: true` the queued response, read later
   * with `response()`.
   */
  async responses(request: ResponsesBody, call: CallOptions = {}): Promise<ResponseObject> {
    const body = json({ ...request, stream: false });
    return decode<ResponseObject>((await this.whole(this.subject("responses"), body, call, true)).data);
  }

  /**
   * A Responses API stream: one event per Responses event, `response.created` to
   * `response.completed` (`.incomplete`, `.failed`), tried and cancelled as `stream()` is.
   */
  streamResponses(request: ResponsesBody, call: CallOptions = {}): EventStream {
    return new EventStream(...this.opener(this.subject("responses"), json({ ...request, stream: true }), call));
  }

  /**
   * Follow a streamed background response (created with `background` and `stream`): its
   * events after the sequence number `startingAfter` (-1: from the first), live up to its
   * last one. To resume a stream that was cut off, pass the last `sequence_number` received.
   * A response not created so is a BadRequestError.
   */
  streamResponse(id: string, startingAfter = -1, call: CallOptions = {}): EventStream {
    const body = json({ id, stream: true, starting_after: startingAfter });
    return new EventStream(...this.opener(SUBJECTS.RESPONSES_GET, body, call));
  }

  /** A stored response (`llm.responses.get`): a background one's current status. Another
   * tenant's, or none, is a NotFoundError. */
  async response(id: string, call: CallOptions = {}): Promise<ResponseObject> {
    return decode<ResponseObject>((await this.call(SUBJECTS.RESPONSES_GET, json({ id }), call)).data);
  }

  /** Delete a stored response (`llm.responses.delete`); a background one still running is
   * cancelled first. */
  async deleteResponse(id: string, call: CallOptions = {}): Promise<ResponseDeleted> {
    return decode<ResponseDeleted>((await this.call(SUBJECTS.RESPONSES_DELETE, json({ id }), call)).data);
  }

  /** Cancel a background response (`llm.responses.cancel`): it is `cancelled`, or as it was
   * when it had finished. Any other response is a BadRequestError. */
  async cancelResponse(id: string, call: CallOptions = {}): Promise<ResponseObject> {
    return decode<ResponseObject>((await this.call(SUBJECTS.RESPONSES_CANCEL, json({ id }), call)).data);
  }

  /** A page of a stored response's input items (`llm.responses.input_items`). */
  async responseInputItems(id: string, query: InputItemsQuery = {}, call: CallOptions = {}): Promise<InputItemList> {
    const reply = await this.call(SUBJECTS.RESPONSES_INPUT_ITEMS, json({ ...query, id }), call);
    return decode<InputItemList>(reply.data);
  }

  /** What a stream needs: the means to open a try of it, and its tries. */
  private opener(subject: string, body: Uint8Array, call: CallOptions): [() => Exchange, Tries] {
    const hdrs = this.headers(call);
    hdrs.set(HEADERS.KEEPALIVE_MS, String(this.keepaliveMs));
    const tries = this.tries(call, hdrs);
    const open = () => {
      hdrs.set(HEADERS.TIMEOUT_MS, String(Math.max(tries.deadline - Date.now(), 1)));
      return new Exchange(this, subject, body, hdrs, {
        deadlineMs: tries.deadline - Date.now(),
        silenceMs: this.attemptTimeoutMs,
        cancelWhenLost: tries.attempts === 1, // else left for the next try to join
        signal: call.signal,
      });
    };
    return [open, tries];
  }

  /**
   * Cancel a request: its id on `llm.cancel`, with the request's reply subject as the cancel's
   * reply (brokers honour a cancel only from the request's own inbox).
   */
  cancel(requestId: string, replySubject: string): void {
    this.nc.publish(SUBJECTS.CANCEL, encoder.encode(requestId), { reply: replySubject });
  }

  /** The models the brokers serve. */
  async models(call: CallOptions = {}): Promise<ModelList> {
    return decode<ModelList>((await this.call(SUBJECTS.MODELS, new Uint8Array(), call)).data);
  }

  /** A call's request headers. */
  headers(call: CallOptions = {}): MsgHdrs {
    const hdrs = natsHeaders();
    hdrs.set(HEADERS.REQUEST_ID, call.requestId ?? newRequestId());
    hdrs.set(HEADERS.TIMEOUT_MS, String(Math.round(call.deadlineMs ?? this.deadlineMs)));
    const optional: Record<string, string | undefined> = {
      [HEADERS.AUTHORIZATION]: this.options.apiKey ? `Bearer ${this.options.apiKey}` : undefined,
      [HEADERS.CACHE_CONTROL]: call.cacheControl,
      [HEADERS.CACHE_NAMESPACE]: call.namespace ?? this.options.namespace,
      [HEADERS.TRACEPARENT]: call.traceparent,
    };
    for (const [name, value] of Object.entries(optional)) if (value) hdrs.set(name, value);
    return hdrs;
  }

  /**
   * Request/reply with tries within the deadline (no responders, silence, 503); a failed reply
   * throws. Aborting `call.signal` cancels the request upstream. Returns the successful reply.
   */
  async call(subject: string, body: Uint8Array, call: CallOptions = {}): Promise<Msg> {
    return this.whole(subject, body, call, false);
  }

  /**
   * The refusal of a body the connected server would not take (its `max_payload` less
   * HEADER_ROOM for the headers): a 413 `request_too_large` naming the limit, raised before
   * anything is published; `null` when it fits.
   */
  refusal(body: Uint8Array, requestId: string): APIError | null {
    const maxPayload = this.nc.info?.max_payload;
    if (maxPayload === undefined) return null;
    const limit = maxPayload - HEADER_ROOM;
    if (body.length <= limit) return null;
    return new BadRequestError(
      INFERRED.REQUEST_TOO_LARGE.status,
      `request body is ${body.length} bytes; the NATS server takes ${limit} ` +
        `(its max_payload, ${maxPayload}, less ${HEADER_ROOM} for headers)`,
      { code: INFERRED.REQUEST_TOO_LARGE.code, requestId },
    );
  }

  /** A call's tries; with more than one, its request is marked `Llm-Idempotent: 1`. */
  private tries(call: CallOptions, hdrs: MsgHdrs): Tries {
    const attempts = Math.max(1, this.options.attempts ?? 4);
    if (attempts > 1) hdrs.set(HEADERS.IDEMPOTENT, "1"); // the tries share one upstream call
    return {
      deadline: Date.now() + (call.deadlineMs ?? this.deadlineMs),
      attempts,
      backoffMs: this.options.backoffMs ?? BACKOFF_MS,
      maxBackoffMs: this.options.maxBackoffMs ?? MAX_BACKOFF_MS,
    };
  }

  /**
   * A whole call (`call()`); `keepalive`: ask the broker for keepalives (chat, messages), so
   * that only silence, not a slow answer, ends an attempt. A try lost to silence is tried
   * again and not cancelled: the next, under its request id, is answered from its upstream
   * call.
   */
  private async whole(subject: string, body: Uint8Array, call: CallOptions, keepalive: boolean): Promise<Msg> {
    const hdrs = this.headers(call);
    if (keepalive) hdrs.set(HEADERS.KEEPALIVE_MS, String(this.keepaliveMs));
    const requestId = hdrs.get(HEADERS.REQUEST_ID);
    const tries = this.tries(call, hdrs);
    for (let attempt = 1; ; attempt += 1) {
      const remaining = tries.deadline - Date.now();
      hdrs.set(HEADERS.TIMEOUT_MS, String(Math.max(remaining, 1)));
      const exchange = new Exchange(this, subject, body, hdrs, {
        deadlineMs: remaining,
        silenceMs: this.attemptTimeoutMs,
        cancelWhenLost: false,
        signal: call.signal,
      });
      let reply: Msg | undefined;
      let failed: APIError | null = null;
      try {
        for await (const msg of exchange.messages(() => true)) reply = msg;
      } catch (error) {
        if (!(exchange.lost && error instanceof DeadlineError)) throw error;
        failed = error;
      }
      if (failed === null) {
        if (reply === undefined) throw new DeadlineError(504, "no reply", { requestId });
        const { code, status: code503 } = INFERRED.NO_BROKER;
        failed = noResponders(reply)
          ? new UnavailableError(code503, `nobody serves ${subject}`, { code, requestId })
          : status(reply) >= 400
            ? fromReply(status(reply), reply.data, reply.headers)
            : null;
        if (failed === null) return reply;
        if (failed.status !== 503) throw failed;
      }
      await backOff(tries, attempt, failed);
    }
  }

  private get deadlineMs(): number {
    return this.options.deadlineMs ?? DEFAULT_DEADLINE_MS;
  }

  private get attemptTimeoutMs(): number {
    return this.options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
  }

  /** The keepalive interval asked for: several fit in the attempt's silence bound. */
  private get keepaliveMs(): number {
    const asked = this.options.keepaliveMs ?? Math.min(KEEPALIVE_MS, this.attemptTimeoutMs / 4);
    return Math.max(MIN_KEEPALIVE_MS, Math.round(asked));
  }

  private subject(api: keyof typeof API_SUBJECTS): string {
    const [plain, tenantBound] = API_SUBJECTS[api];
    const tenant = this.options.tenant;
    return tenant ? tenantBound.replace("{tenant}", tenant) : plain;
  }
}

/** Each API's subject, and its tenant-bound subject (`options.tenant`). */
const API_SUBJECTS = {
  chat: [SUBJECTS.CHAT, SUBJECTS.TENANT_CHAT],
  messages: [SUBJECTS.MESSAGES, SUBJECTS.TENANT_MESSAGES],
  embeddings: [SUBJECTS.EMBEDDINGS, SUBJECTS.TENANT_EMBEDDINGS],
  responses: [SUBJECTS.RESPONSES, SUBJECTS.TENANT_RESPONSES],
} as const;
