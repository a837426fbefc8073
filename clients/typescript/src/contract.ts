/* Generated from docs/asyncapi.json by scripts/asyncapi: do not edit. */

/** Header names, by their constant's name in schemas/headers.py. */
export const HEADERS = {
  /** request: Bearer <API key> */
  AUTHORIZATION: "Authorization",
  /** request: no-cache | no-store | max-age=N */
  CACHE_CONTROL: "Cache-Control",
  /** request: 1: attempts under this request id share one upstream call */
  IDEMPOTENT: "Llm-Idempotent",
  /** request: ask for an empty Llm-Stream: keepalive message on the reply subject at this interval (ms) until the answer begins: silence then means lost, not slow */
  KEEPALIVE_MS: "Llm-Keepalive-Ms",
  /** request: interactive | default | background (chat: the class it waits in when capacity is short, capped by the tenant's max_priority); high | normal | low (batches) */
  PRIORITY: "Llm-Priority",
  /** request: time budget in milliseconds */
  TIMEOUT_MS: "Llm-Timeout-Ms",
  /** request: cache namespace */
  CACHE_NAMESPACE: "X-Cache-Namespace",
  /** request: correlation id (generated when absent) */
  REQUEST_ID: "X-Request-Id",
  /** request: Anthropic beta features, passed to the upstream (and keyed) */
  ANTHROPIC_BETA: "anthropic-beta",
  /** request: Anthropic API version, passed to the upstream */
  ANTHROPIC_VERSION: "anthropic-version",
  /** request: W3C trace context */
  TRACEPARENT: "traceparent",
  /** reply: attempts it took */
  ATTEMPTS: "Llm-Attempts",
  /** reply: embeddings: how many inputs were answered from the cache */
  CACHED_INPUTS: "Llm-Cached-Inputs",
  /** reply: 1: shared with an identical request in flight */
  COALESCED: "Llm-Coalesced",
  /** reply: what a cache hit saved (USD) */
  COST_SAVED: "Llm-Cost-Saved-Usd",
  /** reply: what the answer cost (USD) */
  COST: "Llm-Cost-Usd",
  /** reply: deployment that answered */
  DEPLOYMENT: "Llm-Deployment",
  /** reply: a worker's error reply: the failure's code, whatever API it speaks */
  ERROR_CODE: "Llm-Error-Code",
  /** reply: the stream event's name (llm.messages and llm.responses streams) */
  EVENT: "Llm-Event",
  /** reply: context_window | content_policy: why another model than the one asked for answered */
  FALLBACK: "Llm-Fallback",
  /** reply: llm.batch.file.content: the whole file's digest, SHA-256=<base64url> */
  FILE_DIGEST: "Llm-File-Digest",
  /** reply: llm.batch.file.content: where this piece begins in the file */
  FILE_OFFSET: "Llm-File-Offset",
  /** reply: llm.batch.file.content: the whole file's size in bytes */
  FILE_SIZE: "Llm-File-Size",
  /** reply: the configured model that answered (the one asked for, or its fallback) */
  MODEL: "Llm-Model",
  /** reply: provider that answered */
  PROVIDER: "Llm-Provider",
  /** reply: milliseconds the request waited for capacity before its answer began */
  QUEUE_MS: "Llm-Queue-Ms",
  /** reply: 1: the answer of an earlier attempt with this request id */
  REPLAYED: "Llm-Replayed",
  /** reply: 1: another attempt may succeed */
  RETRYABLE: "Llm-Retryable",
  /** reply: cosine of the earlier question that answered (HIT-SEMANTIC) */
  SEMANTIC_SIMILARITY: "Llm-Semantic-Similarity",
  /** reply: position in a stream */
  SEQ: "Llm-Seq",
  /** reply: the service tier that served the answer (priced at its rates) */
  SERVICE_TIER: "Llm-Service-Tier",
  /** reply: HTTP-like status */
  STATUS: "Llm-Status",
  /** reply: chunk | end | error (streams); keepalive (empty, before the answer) */
  STREAM: "Llm-Stream",
  /** reply: upstream | estimate (llm.messages.count_tokens replies) */
  TOKEN_COUNT: "Llm-Token-Count",
  /** reply: seconds, on 429/503 */
  RETRY_AFTER: "Retry-After",
  /** reply: HIT-L1 | HIT-L2 | HIT-SEMANTIC | MISS | BYPASS */
  CACHE: "X-Cache",
  /** reply: the cache entry */
  CACHE_KEY: "X-Cache-Key",
  /** reply: OpenAI rate-limit header (tenant 429s) */
  RATELIMIT_LIMIT_REQUESTS: "x-ratelimit-limit-requests",
  /** reply: OpenAI rate-limit header (tenant 429s) */
  RATELIMIT_LIMIT_TOKENS: "x-ratelimit-limit-tokens",
  /** reply: OpenAI rate-limit header (tenant 429s) */
  RATELIMIT_REMAINING_REQUESTS: "x-ratelimit-remaining-requests",
  /** reply: OpenAI rate-limit header (tenant 429s) */
  RATELIMIT_REMAINING_TOKENS: "x-ratelimit-remaining-tokens",
  /** reply: OpenAI rate-limit header (tenant 429s) */
  RATELIMIT_RESET_REQUESTS: "x-ratelimit-reset-requests",
  /** reply: OpenAI rate-limit header (tenant 429s) */
  RATELIMIT_RESET_TOKENS: "x-ratelimit-reset-tokens",
} as const;

/** Subjects; `{param}` marks a parameter. */
export const SUBJECTS = {
  CHAT: "llm.chat",
  TENANT_CHAT: "llm.tenant.{tenant}.chat",
  MESSAGES: "llm.messages",
  TENANT_MESSAGES: "llm.tenant.{tenant}.messages",
  EMBEDDINGS: "llm.embeddings",
  TENANT_EMBEDDINGS: "llm.tenant.{tenant}.embeddings",
  RESPONSES: "llm.responses",
  TENANT_RESPONSES: "llm.tenant.{tenant}.responses",
  RESPONSES_GET: "llm.responses.get",
  RESPONSES_DELETE: "llm.responses.delete",
  RESPONSES_CANCEL: "llm.responses.cancel",
  RESPONSES_INPUT_ITEMS: "llm.responses.input_items",
  CANCEL: "llm.cancel",
  MODELS: "llm.models",
  BATCH_EVENTS: "llm.batch.events.{tenant}.{batch_id}",
  BATCH_CREATE: "llm.batch.create",
  BATCH_SUBMIT: "llm.batch.submit",
  BATCH_GET: "llm.batch.get",
  BATCH_LIST: "llm.batch.list",
  BATCH_CANCEL: "llm.batch.cancel",
  BATCH_WHOAMI: "llm.batch.whoami",
  BATCH_FILE_GET: "llm.batch.file.get",
  BATCH_FILE_CONTENT: "llm.batch.file.content",
} as const;

/** Bytes of a server's max_payload left for a request's headers: a body over the rest
 * is refused (413) before it is published. */
export const HEADER_ROOM = 16384;

/** The error tree: each class's parent and meaning. */
export const ERROR_CLASSES = {
  APIError: { parent: "EdgeError", description: "a failure the broker answered (or the client inferred)" },
  AuthenticationError: { parent: "APIError", description: "missing, unknown or revoked API key" },
  BadRequestError: { parent: "APIError", description: "the request breaks the schema or a bound" },
  BudgetExceeded: { parent: "APIError", description: "the tenant spent its budget for the period" },
  ConflictError: { parent: "APIError", description: "the object is in a state that refuses the operation" },
  DeadlineError: { parent: "APIError", description: "the time budget ran out, or no reply came in time" },
  EdgeError: { parent: null, description: "the root of every error the client raises" },
  InternalServerError: { parent: "APIError", description: "the broker or the upstream failed" },
  NotFoundError: { parent: "APIError", description: "no such model, batch or file" },
  PermissionDeniedError: { parent: "APIError", description: "the key may not do this" },
  RateLimitError: { parent: "APIError", description: "the tenant or the upstream is over its rate limit" },
  StreamError: { parent: "EdgeError", description: "a stream's messages arrived out of order or incomplete" },
  UnavailableError: { parent: "APIError", description: "nobody can serve the request now; a later try may work" },
} as const;

export type ErrorClassName = keyof typeof ERROR_CLASSES;

/** The class of each status (others: ERROR_FROM_500, ERROR_OTHERWISE). */
export const ERROR_BY_STATUS: Readonly<Record<number, ErrorClassName>> = {
  400: "BadRequestError",
  401: "AuthenticationError",
  402: "BudgetExceeded",
  403: "PermissionDeniedError",
  404: "NotFoundError",
  408: "DeadlineError",
  409: "ConflictError",
  413: "BadRequestError",
  422: "BadRequestError",
  429: "RateLimitError",
  431: "BadRequestError",
  503: "UnavailableError",
  504: "DeadlineError",
};

/** The class of a status of 500 and up that ERROR_BY_STATUS does not name. */
export const ERROR_FROM_500: ErrorClassName = "InternalServerError";

/** The class of any other status. */
export const ERROR_OTHERWISE: ErrorClassName = "APIError";

/** The codes, and statuses, of errors the client infers without a reply. */
export const INFERRED = {
  DEADLINE_EXCEEDED: { code: "deadline_exceeded", status: 504 },
  NO_BROKER: { code: "no_broker", status: 503 },
  REQUEST_TOO_LARGE: { code: "request_too_large", status: 413 },
} as const;
