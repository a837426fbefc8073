// The Batch API over NATS (`llm.batch.*` request/reply), progress on `llm.batch.events.<id>`.
//
//   const batch = await client.batches.submit(lines);
//   const done = await client.batches.wait(batch.id, { onProgress: (b) => console.log(b.status) });
//   for (const line of await client.batches.results(done)) console.log(line.custom_id);
//
// `wait` subscribes before it reads the batch, so no change falls between the two, and reads it
// again whenever EVENT_GAP_MS pass without an event (an event is published at most once).
import type { Msg } from "nats";

import type { CallOptions, EdgeClient } from "./client.js";
import { json } from "./client.js";
import { SUBJECTS } from "./contract.js";
import { DeadlineError } from "./errors.js";
import type { BatchObject, BatchStatus, BatchSubmit, InputLine } from "./types.js";

/** The endpoint batch lines target (the only one brokers run). */
export const CHAT_ENDPOINT = "/v1/chat/completions";
/** How long `wait` listens for an event before it reads the batch again. */
export const EVENT_GAP_MS = 5_000;
/** The statuses a batch never leaves. */
export const FINAL_STATUSES: ReadonlySet<BatchStatus> = new Set([
  "completed",
  "failed",
  "expired",
  "cancelled",
]);
/** The JetStream object store of batch files. */
export const FILES_BUCKET = "llm_edge_files";

/** Where a batch's progress events are published. */
export function eventsSubject(batchId: string): string {
  return SUBJECTS.BATCH_EVENTS.replace("{batch_id}", batchId);
}

/** One line of a batch's output or error file. */
export interface BatchResultLine {
  id: string;
  custom_id: string;
  response?: { status_code: number; request_id: string; body: Record<string, unknown> } | null;
  error?: { code: string; message: string } | null;
}

export interface SubmitOptions extends CallOptions {
  completionWindow?: string;
  metadata?: Record<string, string>;
}

const decoder = new TextDecoder();
function batchOf(msg: Msg): BatchObject {
  return JSON.parse(decoder.decode(msg.data)) as BatchObject;
}

/** The Batch API (`llm.batch.*`) of one client. */
export class Batches {
  constructor(private readonly client: EdgeClient) {}

  private async op(subject: string, body: unknown, call: CallOptions = {}): Promise<BatchObject> {
    return batchOf(await this.client.call(subject, json(body), call));
  }

  /** Create a batch from inline request lines (`llm.batch.submit`). */
  submit(lines: InputLine[], options: SubmitOptions = {}): Promise<BatchObject> {
    const { completionWindow, metadata, ...call } = options;
    const body: BatchSubmit = {
      endpoint: CHAT_ENDPOINT,
      completion_window: completionWindow ?? "24h",
      lines,
      ...(metadata ? { metadata } : {}),
    };
    return this.op(SUBJECTS.BATCH_SUBMIT, body, call);
  }

  /** The batch as it is now. */
  get(batchId: string, call: CallOptions = {}): Promise<BatchObject> {
    return this.op(SUBJECTS.BATCH_GET, { id: batchId }, call);
  }

  /** Stop the batch: queued lines are dropped, it ends `cancelled`. */
  cancel(batchId: string, call: CallOptions = {}): Promise<BatchObject> {
    return this.op(SUBJECTS.BATCH_CANCEL, { id: batchId }, call);
  }

  /**
   * The batch objects of `llm.batch.events.<id>` as they come (until `stop()`); no event is
   * replayed: subscribe before the batch can change, or use `wait`.
   */
  events(batchId: string): AsyncIterable<BatchObject> & { stop(): void } {
    const sub = this.client.nc.subscribe(eventsSubject(batchId));
    return {
      stop: () => sub.unsubscribe(),
      async *[Symbol.asyncIterator]() {
        for await (const msg of sub) yield batchOf(msg);
      },
    };
  }

  /** The batch once it is final (completed, failed, expired or cancelled). */
  async wait(
    batchId: string,
    options: { timeoutMs?: number; onProgress?: (batch: BatchObject) => void } = {},
  ): Promise<BatchObject> {
    const timeoutMs = options.timeoutMs ?? 3_600_000;
    const until = Date.now() + timeoutMs;
    const sub = this.client.nc.subscribe(eventsSubject(batchId));
    const queued: BatchObject[] = [];
    const waiter: { wake?: () => void } = {};
    void (async () => {
      for await (const msg of sub) {
        queued.push(batchOf(msg));
        waiter.wake?.();
      }
      waiter.wake?.();
    })();
    try {
      let batch = await this.get(batchId);
      for (;;) {
        options.onProgress?.(batch);
        if (FINAL_STATUSES.has(batch.status)) return batch;
        const left = until - Date.now();
        if (left <= 0) {
          throw new DeadlineError(504, `batch ${batchId} not finished within ${timeoutMs} ms`, {
            code: "batch_wait",
          });
        }
        if (queued.length === 0) {
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((resolve) => {
            waiter.wake = resolve;
            timer = setTimeout(resolve, Math.min(EVENT_GAP_MS, left));
          });
          clearTimeout(timer);
          waiter.wake = undefined;
        }
        batch = queued.shift() ?? (await this.get(batchId));
      }
    } finally {
      sub.unsubscribe();
    }
  }

  /** Every line of a finished batch's output and error files (in file order). */
  async results(batch: BatchObject): Promise<BatchResultLine[]> {
    const store = await this.client.nc.jetstream().views.os(FILES_BUCKET);
    const lines: BatchResultLine[] = [];
    for (const fileId of [batch.output_file_id, batch.error_file_id]) {
      if (!fileId) continue;
      const object = await store.get(fileId);
      if (object === null) continue;
      const chunks: Uint8Array[] = [];
      const reader = object.data.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
      }
      const text = decoder.decode(Buffer.concat(chunks));
      for (const raw of text.split("\n")) if (raw) lines.push(JSON.parse(raw) as BatchResultLine);
    }
    return lines;
  }
}
