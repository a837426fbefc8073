// One request's exchange with the brokers, and how its tries are spaced: the reply inbox, the
// deadline and silence timers (a keepalive restarts the silence timer until the answer
// begins), the cancel when it is given up on, and the backoff between tries. The client's
// whole calls (./client.ts) and streams (./streams.ts) are tried over it.
import {
  createInbox,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from "nats";

import { HEADERS, INFERRED } from "./contract.js";
import { DeadlineError, type APIError } from "./errors.js";

/** The first wait between tries (doubled each time, full jitter) and the longest. */
export const BACKOFF_MS = 250;
export const MAX_BACKOFF_MS = 2_000;
/** The longest `Retry-After` waited for between tries. */
export const MAX_RETRY_AFTER_MS = 10_000;

export const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function decode<T>(data: Uint8Array): T {
  return JSON.parse(decoder.decode(data)) as T;
}

/** A received message's status: `Llm-Status`, `fallback` when absent. */
export function status(msg: Msg, fallback = 200): number {
  return Number(msg.headers?.get(HEADERS.STATUS) || String(fallback));
}

/** NATS no-responders: an empty message with the 503 status line. */
export function noResponders(msg: Msg): boolean {
  return msg.headers?.code === 503 && msg.data.length === 0;
}

/** A reply message that is a broker's keepalive (empty, no `Llm-Seq`): never the answer. */
function keepalive(msg: Msg): boolean {
  return msg.headers?.get(HEADERS.STREAM) === "keepalive";
}

export interface ExchangeOptions {
  /** The whole exchange's time budget. */
  deadlineMs: number;
  /** The longest silence before the answer's first message; a keepalive restarts it. */
  silenceMs: number;
  /**
   * Cancel the request upstream when it ran out of time (streams). A whole call leaves it
   * running: a try again under its request id is answered from its upstream call.
   */
  cancelWhenLost: boolean;
  signal?: AbortSignal;
}

/** What an exchange needs of its client (`EdgeClient` is one). */
export interface ExchangeHost {
  readonly nc: NatsConnection;
  /** Prefix of reply inboxes. */
  readonly inboxPrefix: string;
  /** The refusal of a body the server would not take (`null`: it fits). */
  refusal(body: Uint8Array, requestId: string): APIError | null;
  /** Publish a request's cancel, with its inbox as the reply subject. */
  cancel(requestId: string, replySubject: string): void;
}

/**
 * The messages a request's reply inbox receives, keepalives left out, until `last` says the
 * last one came, the deadline passes or the attempt stays silent too long (DeadlineError), or
 * the signal aborts. Whoever stops it early publishes the cancel: `exchange.cancel()`. A body
 * the server would not take is refused before anything is published (413).
 */
export class Exchange {
  readonly inbox: string;
  readonly requestId: string;
  private readonly sub: Subscription | null = null;
  /** Nothing is left to cancel: the reply is complete, cancelled or given up on. */
  private finished = false;
  /** The attempt stayed silent for `silenceMs` before its answer began: it was lost. */
  lost = false;
  private stopped: Error | null = null;
  /** The answer's first message came: silence no longer counts, only the deadline. */
  private begun = false;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private silenceTimer: NodeJS.Timeout | undefined;
  private readonly onAbort: () => void;

  constructor(
    private readonly client: ExchangeHost,
    subject: string,
    body: Uint8Array,
    hdrs: MsgHdrs,
    private readonly options: ExchangeOptions,
  ) {
    const { signal } = options;
    this.requestId = hdrs.get(HEADERS.REQUEST_ID);
    this.inbox = createInbox(client.inboxPrefix);
    this.onAbort = () =>
      this.stop(signal?.reason instanceof Error ? signal.reason : new Error("aborted"), true);
    const refused = client.refusal(body, this.requestId);
    if (refused) {
      this.stopped = refused;
      this.finished = true; // never sent: nothing to cancel
      return;
    }
    this.sub = client.nc.subscribe(this.inbox);
    this.deadlineTimer = setTimeout(
      () =>
        this.stop(
          new DeadlineError(504, `no reply within ${options.deadlineMs} ms`, {
            code: INFERRED.DEADLINE_EXCEEDED.code,
            requestId: this.requestId,
          }),
          options.cancelWhenLost,
        ),
      options.deadlineMs,
    );
    signal?.addEventListener("abort", this.onAbort, { once: true });
    if (signal?.aborted) this.onAbort();
    else {
      this.listen();
      client.nc.publish(subject, body, { reply: this.inbox, headers: hdrs });
    }
  }

  /** (Re)start the silence timer: the answer has not begun. */
  private listen(): void {
    clearTimeout(this.silenceTimer);
    if (this.options.silenceMs >= this.options.deadlineMs) return; // the deadline says it
    this.silenceTimer = setTimeout(
      () => {
        this.lost = true;
        this.stop(
          new DeadlineError(
            504,
            `no answer and no keepalive for ${this.options.silenceMs} ms: the request or its reply was lost`,
            { code: INFERRED.DEADLINE_EXCEEDED.code, requestId: this.requestId },
          ),
          this.options.cancelWhenLost,
        );
      },
      this.options.silenceMs,
    );
  }

  /** Stop listening with `reason` (thrown by `messages()`); `cancel`: cancel the request. */
  stop(reason: Error, cancel: boolean): void {
    if (this.stopped || this.finished) return;
    this.stopped = reason;
    if (cancel) this.cancel();
    else {
      this.finished = true;
      this.close();
    }
  }

  /** Publish the cancel (with the request's inbox as its reply) unless the reply is complete. */
  cancel(): void {
    if (this.finished) return;
    this.finished = true;
    this.close();
    if (!this.client.nc.isClosed()) this.client.cancel(this.requestId, this.inbox);
  }

  private close(): void {
    clearTimeout(this.deadlineTimer);
    clearTimeout(this.silenceTimer);
    this.options.signal?.removeEventListener("abort", this.onAbort);
    this.sub?.unsubscribe();
  }

  /** Every message but keepalives; `last(msg)` says whether it ends the reply. */
  async *messages(last: (msg: Msg) => boolean): AsyncGenerator<Msg> {
    try {
      for await (const msg of this.sub ?? []) {
        if (keepalive(msg)) {
          if (!this.begun && !this.finished) this.listen(); // slow, not lost
          continue;
        }
        if (!this.begun) {
          this.begun = true;
          clearTimeout(this.silenceTimer);
        }
        if (last(msg)) {
          this.finished = true;
          this.close();
        }
        yield msg;
        if (this.stopped) throw this.stopped;
        if (this.finished) return;
      }
      if (this.stopped) throw this.stopped;
    } finally {
      this.cancel(); // a consumer leaving early cancels the request upstream
    }
  }
}

/** How a call is tried: its deadline and the client's policy. */
export interface Tries {
  /** When the call's time budget runs out (epoch ms). */
  deadline: number;
  attempts: number;
  backoffMs: number;
  maxBackoffMs: number;
}

/**
 * Wait before try `attempt + 1` (full jitter, at least a `Retry-After`, at most
 * MAX_RETRY_AFTER_MS of it), or throw `failed` when none may follow: the tries are spent, or
 * the wait would reach the deadline.
 */
export async function backOff(tries: Tries, attempt: number, failed: APIError): Promise<void> {
  const ceiling = Math.min(tries.maxBackoffMs, tries.backoffMs * 2 ** (attempt - 1));
  const asked = Math.min((failed.retryAfter ?? 0) * 1000, MAX_RETRY_AFTER_MS);
  const waitMs = Math.max(Math.random() * ceiling, asked);
  if (attempt >= tries.attempts || Date.now() + waitMs >= tries.deadline) throw failed;
  await new Promise((resolve) => setTimeout(resolve, waitMs));
}

/** JSON bytes of a value. */
export function json(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}
