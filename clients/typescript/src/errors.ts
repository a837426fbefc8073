// The errors the client throws, keyed by `Llm-Status` and the error envelope's code; the names,
// the hierarchy and the status table are the contract's (docs/asyncapi.json, x-client-errors,
// generated into ./contract.ts), as edge_client/errors.py's and the Go client's are:
//
//   EdgeError
//    ├── APIError(status, code, message, param, requestId, retryAfter)
//    │    ├── BadRequestError          400, 413, 422, 431
//    │    ├── AuthenticationError      401
//    │    ├── BudgetExceeded           402
//    │    ├── PermissionDeniedError    403
//    │    ├── NotFoundError            404
//    │    ├── ConflictError            409
//    │    ├── RateLimitError           429
//    │    ├── InternalServerError      500, 502 and other 5xx
//    │    ├── UnavailableError         503
//    │    └── DeadlineError            408, 504, or no reply within the call's deadline
//    └── StreamError                  a stream arrived out of order
import { ERROR_BY_STATUS, ERROR_FROM_500, ERROR_OTHERWISE, HEADERS, type ErrorClassName } from "./contract.js";
import type { ErrorEnvelope } from "./types.js";

/** The root of every error the client throws. */
export class EdgeError extends Error {
  override name = "EdgeError";
}

/** A stream's messages arrived out of order or incomplete. */
export class StreamError extends EdgeError {
  override name = "StreamError";
}

export interface APIErrorContext {
  code?: string | null;
  param?: string | null;
  requestId?: string | null;
  retryAfter?: number | null;
}

/** A failure the broker answered (or the client inferred), with its context. */
export class APIError extends EdgeError {
  override name = "APIError";
  /** The `Llm-Status` (HTTP-like). */
  readonly status: number;
  /** The envelope's machine-readable code (`model_not_found` ...), if any. */
  readonly code: string | null;
  /** The request field at fault, if any. */
  readonly param: string | null;
  /** The request's `X-Request-Id`. */
  readonly requestId: string | null;
  /** Seconds the broker asked to wait before another try, if it said. */
  readonly retryAfter: number | null;
  /** The envelope's message, for a person. */
  readonly detail: string;

  constructor(status: number, message: string, context: APIErrorContext = {}) {
    const where = context.param ? ` (param ${context.param})` : "";
    super(`${status} ${context.code ?? "error"}: ${message}${where}`);
    this.status = status;
    this.detail = message;
    this.code = context.code ?? null;
    this.param = context.param ?? null;
    this.requestId = context.requestId ?? null;
    this.retryAfter = context.retryAfter ?? null;
  }
}

/** The request breaks the schema or a bound (400, 413, 431). */
export class BadRequestError extends APIError {
  override name = "BadRequestError";
}
/** Missing, unknown or revoked API key (401). */
export class AuthenticationError extends APIError {
  override name = "AuthenticationError";
}
/** The tenant spent its budget for the period (402). */
export class BudgetExceeded extends APIError {
  override name = "BudgetExceeded";
}
/** The key may not do this (403). */
export class PermissionDeniedError extends APIError {
  override name = "PermissionDeniedError";
}
/** No such model, batch or file (404). */
export class NotFoundError extends APIError {
  override name = "NotFoundError";
}
/** The object is in a state that refuses the operation (409). */
export class ConflictError extends APIError {
  override name = "ConflictError";
}
/** The tenant or the upstream is over its rate limit (429). */
export class RateLimitError extends APIError {
  override name = "RateLimitError";
}
/** The broker or the upstream failed (5xx other than 503 and 504). */
export class InternalServerError extends APIError {
  override name = "InternalServerError";
}
/** Nobody can serve the request now; a later try may work (503). */
export class UnavailableError extends APIError {
  override name = "UnavailableError";
}
/** The request's time budget ran out (504, or no reply in time). */
export class DeadlineError extends APIError {
  override name = "DeadlineError";
}

type APIErrorClass = new (status: number, message: string, context?: APIErrorContext) => APIError;

/** Every class of the contract's tree, by its name there (the compiler checks that each is here). */
export const ERROR_CLASS_BY_NAME = {
  EdgeError,
  APIError,
  BadRequestError,
  AuthenticationError,
  BudgetExceeded,
  PermissionDeniedError,
  NotFoundError,
  ConflictError,
  RateLimitError,
  InternalServerError,
  UnavailableError,
  DeadlineError,
  StreamError,
} satisfies Record<ErrorClassName, unknown>;

function apiClass(name: ErrorClassName): APIErrorClass {
  const found: unknown = ERROR_CLASS_BY_NAME[name];
  if (found !== APIError && !(typeof found === "function" && found.prototype instanceof APIError)) {
    throw new TypeError(`${name} is not an APIError`);
  }
  return found as APIErrorClass;
}

/** The class of a status (others: InternalServerError from 500 up, else APIError). */
export function errorClass(status: number): APIErrorClass {
  const name = ERROR_BY_STATUS[status] ?? (status >= 500 ? ERROR_FROM_500 : ERROR_OTHERWISE);
  return apiClass(name);
}

/** Reply headers as the client reads them (a NATS `MsgHdrs` fits). */
export interface HeaderReader {
  get(name: string): string;
}

/**
 * The exception for a failed reply: its class from the status, its context from the error
 * envelope (OpenAI's `{"error": {...}}`, or Anthropic's `{"type": "error", "error": {...}}`).
 */
export function fromReply(status: number, body: Uint8Array, headers?: HeaderReader): APIError {
  const text = new TextDecoder().decode(body);
  let message = text.slice(0, 200);
  let code: string | null = null;
  let param: string | null = null;
  try {
    const envelope = JSON.parse(text) as ErrorEnvelope;
    if (envelope && typeof envelope.error?.message === "string") {
      ({ message } = envelope.error);
      code = envelope.error.code ?? null;
      param = envelope.error.param ?? null;
    }
  } catch {
    // not an envelope: the body's start is the message
  }
  const retry = headers?.get(HEADERS.RETRY_AFTER);
  const retryAfter = retry && Number.isFinite(Number(retry)) ? Number(retry) : null;
  const requestId = headers?.get(HEADERS.REQUEST_ID) || null;
  return new (errorClass(status))(status, message, { code, param, requestId, retryAfter });
}
