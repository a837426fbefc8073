/* Generated from docs/asyncapi.json by scripts/generate-types.mjs (npm run generate): do not edit. */

/**
 * OpenAI's batch statuses.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "BatchStatus".
 */
export type BatchStatus =
  | "cancelled"
  | "cancelling"
  | "completed"
  | "expired"
  | "failed"
  | "finalizing"
  | "in_progress"
  | "validating";
/**
 * What a call on ``llm.provider.<provider>.batch`` asks for.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "OffloadOp".
 */
export type OffloadOp = "cancel" | "find" | "results" | "status" | "submit";
/**
 * What a call on ``llm.provider.<provider>.responses`` asks for.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "UpstreamOp".
 */
export type UpstreamOp = "cancel" | "get";

/**
 * Every payload schema of the NATS API, by name.
 */
export interface PayloadSchemas {
  BatchError: BatchError;
  BatchErrors: BatchErrors;
  BatchObject: BatchObject;
  BatchOffload: BatchOffload;
  BatchStatus: BatchStatus;
  BatchSubmit: BatchSubmit;
  ChatCompletion: ChatCompletion;
  ChatCompletionChunk: ChatCompletionChunk;
  ChatRequest: ChatRequest;
  Choice: Choice;
  ChunkChoice: ChunkChoice;
  Delta: Delta;
  DeploymentReport: DeploymentReport;
  Embedding: Embedding;
  EmbeddingList: EmbeddingList;
  EmbeddingUsage: EmbeddingUsage;
  EmbeddingsRequest: EmbeddingsRequest;
  ErrorDetail: ErrorDetail;
  ErrorEnvelope: ErrorEnvelope;
  FileObject: FileObject;
  FileRequest: FileRequest;
  FunctionCall: FunctionCall;
  InputLine: InputLine;
  MeshReport: MeshReport;
  Message: Message;
  MessageParam: MessageParam;
  MessagesRequest: MessagesRequest;
  Model: Model;
  ModelList: ModelList;
  OffloadAnswer: OffloadAnswer;
  OffloadCall: OffloadCall;
  OffloadOp: OffloadOp;
  RequestCounts: RequestCounts;
  ResponseMessage: ResponseMessage;
  ResponsesRequest: ResponsesRequest;
  StreamEnd: StreamEnd;
  StreamOptions: StreamOptions;
  Tool: Tool;
  ToolCall: ToolCall;
  ToolChoice: ToolChoice;
  ToolFunction: ToolFunction;
  UpstreamOp: UpstreamOp;
  UpstreamResponseCall: UpstreamResponseCall;
  Usage: Usage;
}
/**
 * One validation error.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "BatchError".
 */
export interface BatchError {
  code: string;
  line?: number | null;
  message: string;
  param?: string | null;
}
/**
 * ``errors``: ``{"object": "list", "data": [...]}``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "BatchErrors".
 */
export interface BatchErrors {
  data: BatchError[];
  object?: string;
}
/**
 * The batch object of ``/v1/batches``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "BatchObject".
 */
export interface BatchObject {
  cancelled_at?: number | null;
  cancelling_at?: number | null;
  completed_at?: number | null;
  completion_window: string;
  created_at: number;
  endpoint: string;
  error_file_id?: string | null;
  errors?: BatchErrors | null;
  expired_at?: number | null;
  expires_at?: number | null;
  failed_at?: number | null;
  finalizing_at?: number | null;
  id: string;
  in_progress_at?: number | null;
  input_file_id: string;
  metadata?: {
    [k: string]: string;
  } | null;
  object?: string;
  offload?: BatchOffload | null;
  output_file_id?: string | null;
  request_counts?: RequestCounts;
  status: BatchStatus;
}
/**
 * Our extension of the batch object: where its lines run.
 *
 * Attributes:
 *     providers: lines sent to each provider's own Batch API.
 *     completed: of those, lines whose provider result was merged back.
 *     fallback: lines re-run on the normal path (a provider batch that failed, expired,
 *         would miss the window, or lines it did not complete).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "BatchOffload".
 */
export interface BatchOffload {
  completed?: {
    [k: string]: number;
  };
  fallback?: number;
  providers?: {
    [k: string]: number;
  };
}
/**
 * ``request_counts``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "RequestCounts".
 */
export interface RequestCounts {
  completed?: number;
  failed?: number;
  total?: number;
}
/**
 * ``llm.batch.submit``: create a batch from inline lines (or an uploaded file's id).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "BatchSubmit".
 */
export interface BatchSubmit {
  completion_window: string;
  endpoint: string;
  input_file_id?: string | null;
  lines?: InputLine[] | null;
  metadata?: {
    [k: string]: string;
  } | null;
}
/**
 * One line of a batch input file.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "InputLine".
 */
export interface InputLine {
  body: {};
  custom_id: string;
  method: string;
  url: string;
}
/**
 * ``chat.completion`` object (``service_tier``: the tier that served it, when the
 * upstream says).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ChatCompletion".
 */
export interface ChatCompletion {
  choices: Choice[];
  created: number;
  id: string;
  model: string;
  object?: string;
  service_tier?: string | null;
  system_fingerprint?: string | null;
  usage?: Usage | null;
}
/**
 * One completion choice.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Choice".
 */
export interface Choice {
  finish_reason?: string | null;
  index: number;
  logprobs?: {} | null;
  message: ResponseMessage;
}
/**
 * The assistant message inside a choice.
 *
 * ``reasoning_content`` (and ``reasoning``) is the thinking some OpenAI-compatible servers
 * (vLLM, DeepSeek, Ollama ...) return beside the answer.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ResponseMessage".
 */
export interface ResponseMessage {
  content?: string | null;
  reasoning?: string | null;
  reasoning_content?: string | null;
  refusal?: string | null;
  role: string;
  tool_calls?: ToolCall[] | null;
}
/**
 * An assistant's request to call a tool.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ToolCall".
 */
export interface ToolCall {
  function: FunctionCall;
  id: string;
  type?: string;
}
/**
 * ``{"name", "arguments"}`` of an assistant tool call; ``arguments`` is a JSON string.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "FunctionCall".
 */
export interface FunctionCall {
  arguments?: string;
  name: string;
}
/**
 * Token counts of one completion (with OpenAI's breakdowns when the upstream gives
 * them: cached prompt tokens, reasoning tokens ...; cache writes as
 * ``prompt_tokens_details.cache_write_tokens``, see :mod:`schemas.usage`).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Usage".
 */
export interface Usage {
  completion_tokens?: number;
  completion_tokens_details?: {} | null;
  prompt_tokens?: number;
  prompt_tokens_details?: {} | null;
  total_tokens?: number;
}
/**
 * ``chat.completion.chunk`` object.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ChatCompletionChunk".
 */
export interface ChatCompletionChunk {
  choices: ChunkChoice[];
  created: number;
  id: string;
  model: string;
  object?: string;
  service_tier?: string | null;
  system_fingerprint?: string | null;
  usage?: Usage | null;
}
/**
 * One choice of a streamed chunk.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ChunkChoice".
 */
export interface ChunkChoice {
  delta: Delta;
  finish_reason?: string | null;
  index: number;
  logprobs?: {} | null;
}
/**
 * Incremental message content in a streamed chunk (``reasoning_content`` and
 * ``reasoning``: see :class:`ResponseMessage`).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Delta".
 */
export interface Delta {
  content?: string | null;
  reasoning?: string | null;
  reasoning_content?: string | null;
  refusal?: string | null;
  role?: string | null;
  tool_calls?: {}[] | null;
}
/**
 * ``POST /v1/chat/completions`` body, the payload of ``llm.chat``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ChatRequest".
 */
export interface ChatRequest {
  audio?: {} | null;
  frequency_penalty?: number | null;
  logit_bias?: {
    [k: string]: number;
  } | null;
  logprobs?: boolean | null;
  max_completion_tokens?: number | null;
  max_tokens?: number | null;
  /**
   * @minItems 1
   */
  messages: [Message, ...Message[]];
  metadata?: {
    [k: string]: string;
  } | null;
  modalities?: string[] | null;
  model: string;
  n?: number | null;
  parallel_tool_calls?: boolean | null;
  prediction?: {} | null;
  presence_penalty?: number | null;
  prompt_cache_key?: string | null;
  reasoning_effort?: string | null;
  response_format?: {} | null;
  safety_identifier?: string | null;
  seed?: number | null;
  service_tier?: string | null;
  stop?:
    | string
    | []
    | [string]
    | [string, string]
    | [string, string, string]
    | [string, string, string, string]
    | null;
  store?: boolean | null;
  stream?: boolean | null;
  stream_options?: StreamOptions | null;
  temperature?: number | null;
  tool_choice?: string | {} | null;
  tools?: Tool[] | null;
  top_logprobs?: number | null;
  top_p?: number | null;
  user?: string | null;
  verbosity?: string | null;
  web_search_options?: {} | null;
}
/**
 * One chat message; ``content`` is a string or a list of typed parts.
 *
 * ``refusal``, ``audio``, ``function_call`` and ``annotations`` are what an assistant
 * message of OpenAI's own answers carries when a caller sends it back in the history.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Message".
 */
export interface Message {
  annotations?: {}[] | null;
  audio?: {} | null;
  content?: string | {}[] | null;
  function_call?: {} | null;
  name?: string | null;
  refusal?: string | null;
  role: "assistant" | "developer" | "function" | "system" | "tool" | "user";
  tool_call_id?: string | null;
  tool_calls?: ToolCall[] | null;
}
/**
 * Streaming options; ``include_usage`` adds a final usage chunk.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "StreamOptions".
 */
export interface StreamOptions {
  include_usage?: boolean | null;
}
/**
 * ``{"type": "function", "function": {...}}``, or another kind of tool
 * (``{"type": "custom", "custom": {...}}``).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Tool".
 */
export interface Tool {
  custom?: {} | null;
  function?: ToolFunction | null;
  type?: string;
}
/**
 * A callable function offered to the model.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ToolFunction".
 */
export interface ToolFunction {
  description?: string | null;
  name: string;
  parameters?: {} | null;
  strict?: boolean | null;
}
/**
 * One broker's view of one deployment.
 *
 * Attributes:
 *     name: the deployment.
 *     latency_s: the broker's moving average of its successful calls' latency.
 *     age_s: seconds since that average last moved.
 *     answered: calls it ended since its last report (how much its average weighs).
 *     errors: of those, failures that were the deployment's fault.
 *     in_flight: its calls in flight now.
 *     open: its breaker is open.
 *     paused_s: the provider asked for nothing more for this long from now (a 429, or no
 *         requests or tokens left until a reset).
 *     rpm, tpm: limits the provider named in its headers.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "DeploymentReport".
 */
export interface DeploymentReport {
  age_s?: number;
  answered?: number;
  errors?: number;
  in_flight?: number;
  latency_s?: number | null;
  name: string;
  open?: boolean;
  paused_s?: number;
  rpm?: number | null;
  tpm?: number | null;
}
/**
 * One vector: floats, or (``encoding_format: base64``) its little-endian float32 bytes
 * in base64.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Embedding".
 */
export interface Embedding {
  embedding: number[] | string;
  index: number;
  object?: "embedding";
}
/**
 * The answer of ``llm.embeddings``: one embedding per input, in input order.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "EmbeddingList".
 */
export interface EmbeddingList {
  data: Embedding[];
  model: string;
  object?: "list";
  usage: EmbeddingUsage;
}
/**
 * Tokens of the inputs (embeddings have no completion).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "EmbeddingUsage".
 */
export interface EmbeddingUsage {
  prompt_tokens?: number;
  total_tokens?: number;
}
/**
 * ``POST /v1/embeddings`` body, the payload of ``llm.embeddings``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "EmbeddingsRequest".
 */
export interface EmbeddingsRequest {
  dimensions?: number | null;
  encoding_format?: ("base64" | "float") | null;
  /**
   * a non-empty text, or 1 to 2048 of: texts (all non-empty), token ids (one token array), or token arrays (all non-empty); never a mix
   */
  input: string | (string | number | number[])[];
  model: string;
  user?: string | null;
}
/**
 * OpenAI's error object.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ErrorDetail".
 */
export interface ErrorDetail {
  code?: string | null;
  message: string;
  param?: string | null;
  type: string;
}
/**
 * ``{"error": {...}}``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ErrorEnvelope".
 */
export interface ErrorEnvelope {
  error: ErrorDetail;
}
/**
 * The file object of ``/v1/files``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "FileObject".
 */
export interface FileObject {
  bytes: number;
  created_at: number;
  filename: string;
  id: string;
  object?: string;
  purpose: string;
  status?: string;
  status_details?: string | null;
}
/**
 * ``llm.batch.file.get`` (``id``) and ``llm.batch.file.content`` (``id`` and the piece:
 * ``length`` bytes from ``offset``; the broker sends less when the piece would not fit the
 * server's ``max_payload``, and none at the end of the file).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "FileRequest".
 */
export interface FileRequest {
  id: string;
  length?: number | null;
  offset?: number;
}
/**
 * One broker's report: who sends it, and its deployments.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "MeshReport".
 */
export interface MeshReport {
  broker: string;
  deployments?: DeploymentReport[];
}
/**
 * One turn: ``user`` or ``assistant``, a string or a list of content blocks (each a JSON
 * object with a ``type``, kept whole).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "MessageParam".
 */
export interface MessageParam {
  content: string | {}[];
  role: "assistant" | "user";
}
/**
 * ``POST /v1/messages`` body, the payload of ``llm.messages`` (and, without
 * ``max_tokens``, of ``llm.messages.count_tokens``).
 *
 * The fields Anthropic documents are named so that a request made of them alone is read in
 * one pass; the open-ended ones stay plain JSON. Fields it does not name are kept too (the
 * forwarded body is the caller's; the cache key reads them separately).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "MessagesRequest".
 */
export interface MessagesRequest {
  cache_control?: {} | null;
  container?: {
    [k: string]: unknown;
  };
  context_management?: {} | null;
  inference_geo?: string | null;
  max_tokens?: number | null;
  mcp_servers?: {}[] | null;
  /**
   * @minItems 1
   */
  messages: [MessageParam, ...MessageParam[]];
  metadata?: {} | null;
  model: string;
  output_config?: {} | null;
  output_format?: {} | null;
  service_tier?: string | null;
  speed?: string | null;
  stop_sequences?: string[] | null;
  stream?: boolean | null;
  system?: string | {}[] | null;
  temperature?: number | null;
  thinking?: {} | null;
  tool_choice?: ToolChoice | null;
  tools?: {}[] | null;
  top_k?: number | null;
  top_p?: number | null;
}
/**
 * ``{"type": "auto" | "any" | "none"}`` or ``{"type": "tool", "name": ...}``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ToolChoice".
 */
export interface ToolChoice {
  disable_parallel_tool_use?: boolean | null;
  name?: string | null;
  type: "any" | "auto" | "none" | "tool";
}
/**
 * One entry of the model list (``llm.models``), as OpenAI's ``GET /v1/models``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Model".
 */
export interface Model {
  created: number;
  id: string;
  object?: string;
  owned_by: string;
}
/**
 * The reply of ``llm.models``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ModelList".
 */
export interface ModelList {
  data: Model[];
  object?: string;
}
/**
 * The worker's answer.
 *
 * Attributes:
 *     provider_batch: the provider's batch id (``find``: empty when the provider surely
 *         holds no batch of that submit).
 *     ended: the provider's batch is done (completed, failed, expired, cancelled, ended).
 *     provider_status: the provider's own status word.
 *     succeeded: lines the results object holds as succeeded (``results``).
 *     error: why the call failed (the other fields are then empty); ``status`` is its
 *         HTTP-like status (429: the provider rate-limited the call and created nothing;
 *         another 4xx: retrying cannot help).
 *     retry_after: seconds the provider asked us to wait before calling again (0: it did
 *         not say).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "OffloadAnswer".
 */
export interface OffloadAnswer {
  ended?: boolean;
  error?: string;
  provider_batch?: string;
  provider_status?: string;
  retry_after?: number;
  status?: number;
  succeeded?: number;
}
/**
 * One call on ``llm.provider.<provider>.batch``.
 *
 * Attributes:
 *     op: submit the lines of ``input``; find the provider batch a submit of ``input``
 *         created; read the status of, write the results of, or cancel ``provider_batch``.
 *     input: the object (files bucket) holding the sub-batch's input lines; its name is
 *         the sub-batch's tag upstream (``submit``, ``find``).
 *     upstream_model: the model name the provider knows (every line's ``model``).
 *     provider_batch: the provider's batch id (every op but ``submit`` and ``find``).
 *     results: the object the worker writes the normalized results to (``results``).
 *     not_after: unix time after which the worker creates no provider batch (``submit``).
 *     since: unix time of the submit's intent: the batch was created after it (``find``).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "OffloadCall".
 */
export interface OffloadCall {
  input?: string;
  not_after?: number;
  op: OffloadOp;
  provider_batch?: string;
  results?: string;
  since?: number;
  upstream_model?: string;
}
/**
 * A Responses request, as far as the broker reads it (other fields are kept in the body).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ResponsesRequest".
 */
export interface ResponsesRequest {
  background?: boolean | null;
  input?: string | {}[] | null;
  instructions?: string | null;
  max_output_tokens?: number | null;
  metadata?: {
    [k: string]: string;
  } | null;
  model: string;
  previous_response_id?: string | null;
  store?: boolean | null;
  stream?: boolean | null;
  temperature?: number | null;
  text?: {} | null;
  tool_choice?: string | {} | null;
  tools?: {}[] | null;
  top_p?: number | null;
}
/**
 * The last message of a streamed reply (``Llm-Stream: end``): totals for the stream.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "StreamEnd".
 */
export interface StreamEnd {
  finish_reason?: string | null;
  usage?: Usage | null;
}
/**
 * One call on ``llm.provider.<provider>.responses``: read or cancel a background
 * response the upstream runs. The reply is the upstream's ``response`` object, or an error
 * envelope (its status in ``Llm-Status``).
 *
 * Attributes:
 *     op: read it, or cancel it.
 *     id: the upstream's own id of the response.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "UpstreamResponseCall".
 */
export interface UpstreamResponseCall {
  id: string;
  op: UpstreamOp;
}
