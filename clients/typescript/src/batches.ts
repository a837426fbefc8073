// The Batch API over NATS (`llm.batch.*` request/reply), progress on
// `llm.batch.events.<tenant>.<id>`.
//
//   const batch = await client.batches.submit(lines);
//   const done = await client.batches.wait(batch.id, { onProgress: (b) => console.log(b.status) });
//   for (const line of await client.batches.results(done)) console.log(line.custom_id);
//
// Everything goes through the brokers: files are read piece by piece with
// `llm.batch.file.content` (never from JetStream, so a producer needs no JetStream permission
// and reads only its own tenant's files), and events come from the tenant's own subject (the
// tenant is asked of `llm.batch.whoami` once). `wait` subscribes before it reads the batch, so
// no change falls between the two, and reads it again whenever EVENT_GAP_MS pass without an
// event (an event is published at most once).
import { createHash } from "node:crypto";

import type { Msg } from "nats";

import type { CallOptions, EdgeClient } from "./client.js";
import { json } from "./client.js";
import { HEADERS, HEADER_ROOM, SUBJECTS } from "./contract.js";
import { DeadlineError, StreamError } from "./errors.js";
import type { BatchObject, BatchStatus, BatchSubmit, FileObject, FileRequest, InputLine } from "./types.js";

/** The endpoint batch lines target unless told otherwise. */
export const CHAT_ENDPOINT = "/v1/chat/completions";
/** The other endpoint brokers run batch lines of: each line's embeddings list. */
export const EMBEDDINGS_ENDPOINT = "/v1/embeddings";
/** How long `wait` listens for an event before it reads the batch again. */
export const EVENT_GAP_MS = 5_000;
/** The statuses a batch never leaves. */
export const FINAL_STATUSES: ReadonlySet<BatchStatus> = new Set([
  "completed",
  "failed",
  "expired",
  "cancelled",
]);
/** The piece of a file asked for at a time: what a broker sends at most (less on a server of smaller messages). */
export const PIECE_BYTES = 4 * 1024 * 1024;

/** Where a batch's progress events are published: its tenant's subject. */
export function eventsSubject(tenant: string, batchId: string): string {
  return SUBJECTS.BATCH_EVENTS.replace("{tenant}", tenant).replace("{batch_id}", batchId);
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
  /** The url every line names: `CHAT_ENDPOINT` (the default) or `EMBEDDINGS_ENDPOINT`. */
  endpoint?: string;
}

const decoder = new TextDecoder();
function batchOf(msg: Msg): BatchObject {
  return JSON.parse(decoder.decode(msg.data)) as BatchObject;
}

/** The Batch API (`llm.batch.*`) of one client. */
export class Batches {
  constructor(private readonly client: EdgeClient) {}

  private tenantName?: string;

  private async op(subject: string, body: unknown, call: CallOptions = {}): Promise<BatchObject> {
    return batchOf(await this.client.call(subject, json(body), call));
  }

  /** The tenant the brokers take this client for (`llm.batch.whoami`, asked once). */
  async tenant(call: CallOptions = {}): Promise<string> {
    if (this.tenantName === undefined) {
      const reply = await this.client.call(SUBJECTS.BATCH_WHOAMI, json({}), call);
      this.tenantName = (JSON.parse(decoder.decode(reply.data)) as { tenant: string }).tenant;
    }
    return this.tenantName;
  }

  /** Create a batch from inline request lines (`llm.batch.submit`). */
  submit(lines: InputLine[], options: SubmitOptions = {}): Promise<BatchObject> {
    const { completionWindow, metadata, endpoint, ...call } = options;
    const body: BatchSubmit = {
      endpoint: endpoint ?? CHAT_ENDPOINT,
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
   * The batch objects of `llm.batch.events.<tenant>.<id>` as they come (until `stop()`); no
   * event is replayed: subscribe before the batch can change, or use `wait`.
   */
  async events(batchId: string): Promise<AsyncIterable<BatchObject> & { stop(): void }> {
    const sub = this.client.nc.subscribe(eventsSubject(await this.tenant(), batchId));
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
    const sub = this.client.nc.subscribe(eventsSubject(await this.tenant(), batchId));
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
  async results(batch: BatchObject, call: CallOptions = {}): Promise<BatchResultLine[]> {
    const lines: BatchResultLine[] = [];
    for (const fileId of [batch.output_file_id, batch.error_file_id]) {
      if (!fileId) continue;
      const text = decoder.decode(await this.content(fileId, call));
      for (const raw of text.split("\n")) if (raw) lines.push(JSON.parse(raw) as BatchResultLine);
    }
    return lines;
  }

  /** A file's object (`llm.batch.file.get`); NotFoundError for another tenant's file. */
  async file(fileId: string, call: CallOptions = {}): Promise<FileObject> {
    const body: FileRequest = { id: fileId };
    const reply = await this.client.call(SUBJECTS.BATCH_FILE_GET, json(body), call);
    return JSON.parse(decoder.decode(reply.data)) as FileObject;
  }

  /**
   * A file's bytes, read piece by piece with `llm.batch.file.content` and checked against the
   * file's digest: whole and byte-identical, or a StreamError (NotFoundError for another
   * tenant's file). `pieceBytes`: the most bytes asked for at a time.
   */
  async content(fileId: string, call: CallOptions & { pieceBytes?: number } = {}): Promise<Uint8Array> {
    const { pieceBytes, ...options } = call;
    const maxPayload = this.client.nc.info?.max_payload ?? PIECE_BYTES + HEADER_ROOM;
    const length = Math.max(1, Math.min(pieceBytes ?? PIECE_BYTES, maxPayload - HEADER_ROOM));
    const hash = createHash("sha256");
    const pieces: Uint8Array[] = [];
    let offset = 0;
    let size = -1;
    let digest = "";
    while (offset !== size) {
      const request: FileRequest = { id: fileId, offset, length };
      const reply = await this.client.call(SUBJECTS.BATCH_FILE_CONTENT, json(request), options);
      const piece = pieceOf(reply, fileId, offset);
      if (size < 0) [size, digest] = [piece.size, piece.digest];
      else if (piece.size !== size || piece.digest !== digest) {
        throw new StreamError(`file ${fileId} changed while it was read`);
      }
      if (reply.data.length === 0 && offset < size) {
        throw new StreamError(`file ${fileId}: no bytes at offset ${offset} of ${size}`);
      }
      hash.update(reply.data);
      pieces.push(reply.data);
      offset += reply.data.length;
      if (offset > size) throw new StreamError(`file ${fileId}: ${offset} bytes read of ${size}`);
    }
    checkDigest(fileId, digest, hash.digest());
    return Buffer.concat(pieces);
  }
}

/** The file's size and digest a piece names; it must begin where it was asked to. */
function pieceOf(reply: Msg, fileId: string, offset: number): { size: number; digest: string } {
  const size = Number(reply.headers?.get(HEADERS.FILE_SIZE) || NaN);
  const begins = Number(reply.headers?.get(HEADERS.FILE_OFFSET) || NaN);
  if (!Number.isInteger(size) || !Number.isInteger(begins)) {
    throw new StreamError(`file ${fileId}: a piece without its size or offset`);
  }
  if (begins !== offset) throw new StreamError(`file ${fileId}: asked for offset ${offset}, got ${begins}`);
  return { size, digest: reply.headers?.get(HEADERS.FILE_DIGEST) ?? "" };
}

/** Compare with the stored `SHA-256=<base64url>` digest (a file stored without one is taken as read). */
function checkDigest(fileId: string, digest: string, computed: Buffer): void {
  if (!digest.toLowerCase().startsWith("sha-256=")) return;
  const stored = Buffer.from(digest.slice("sha-256=".length), "base64url");
  if (!stored.equals(computed)) throw new StreamError(`file ${fileId}: the bytes read do not match its digest`);
}
