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
 * Every payload schema of the NATS API, by name.
 */
export interface PayloadSchemas {
  AnthropicRequest: AnthropicRequest;
  BatchError: BatchError;
  BatchErrors: BatchErrors;
  BatchObject: BatchObject;
  BatchStatus: BatchStatus;
  BatchSubmit: BatchSubmit;
  ChatCompletion: ChatCompletion;
  ChatCompletionChunk: ChatCompletionChunk;
  ChatRequest: ChatRequest;
  Choice: Choice;
  ChunkChoice: ChunkChoice;
  ContentBlock: ContentBlock;
  Delta: Delta;
  ErrorDetail: ErrorDetail;
  ErrorEnvelope: ErrorEnvelope;
  FileObject: FileObject;
  FileRequest: FileRequest;
  FunctionCall: FunctionCall;
  InputLine: InputLine;
  Message: Message;
  MessageParam: MessageParam;
  Metadata: Metadata;
  Model: Model;
  ModelList: ModelList;
  RequestCounts: RequestCounts;
  ResponseMessage: ResponseMessage;
  Source: Source;
  StreamEnd: StreamEnd;
  StreamOptions: StreamOptions;
  Tool: Tool;
  ToolCall: ToolCall;
  ToolChoice: ToolChoice;
  ToolFunction: ToolFunction;
  ToolParam: ToolParam;
  Usage: Usage;
}
/**
 * ``POST /v1/messages`` body, the payload of ``llm.messages``.
 *
 * ``stop_sequences`` is capped at the chat-completions limit the request is translated to.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "AnthropicRequest".
 */
export interface AnthropicRequest {
  max_tokens: number;
  /**
   * @minItems 1
   */
  messages: [MessageParam, ...MessageParam[]];
  metadata?: Metadata | null;
  model: string;
  stop_sequences?:
    | []
    | [string]
    | [string, string]
    | [string, string, string]
    | [string, string, string, string]
    | null;
  stream?: boolean | null;
  system?: string | ContentBlock[] | null;
  temperature?: number | null;
  tool_choice?: ToolChoice | null;
  tools?: ToolParam[] | null;
  top_k?: number | null;
  top_p?: number | null;
}
/**
 * One turn: ``user`` or ``assistant``, a string or a list of blocks.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "MessageParam".
 */
export interface MessageParam {
  content: string | ContentBlock[];
  role: "assistant" | "user";
}
/**
 * One content block (``text``, ``image``, ``tool_use``, ``tool_result`` ...).
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ContentBlock".
 */
export interface ContentBlock {
  content?: string | ContentBlock[] | null;
  id?: string | null;
  input?: {} | null;
  is_error?: boolean | null;
  name?: string | null;
  source?: Source | null;
  text?: string | null;
  tool_use_id?: string | null;
  type: string;
}
/**
 * An image's ``source``: ``base64`` (``media_type`` + ``data``) or ``url``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Source".
 */
export interface Source {
  data?: string | null;
  media_type?: string | null;
  type: string;
  url?: string | null;
}
/**
 * ``metadata``: only ``user_id`` is defined.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Metadata".
 */
export interface Metadata {
  user_id?: string | null;
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
 * A tool offered to the model.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ToolParam".
 */
export interface ToolParam {
  description?: string | null;
  input_schema?: {} | null;
  name: string;
  type?: string | null;
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
  output_file_id?: string | null;
  request_counts?: RequestCounts;
  status: BatchStatus;
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
 * ``chat.completion`` object.
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
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "ResponseMessage".
 */
export interface ResponseMessage {
  content?: string | null;
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
 * Token counts of one completion.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Usage".
 */
export interface Usage {
  completion_tokens?: number;
  prompt_tokens?: number;
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
 * Incremental message content in a streamed chunk.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Delta".
 */
export interface Delta {
  content?: string | null;
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
  model: string;
  n?: number | null;
  parallel_tool_calls?: boolean | null;
  presence_penalty?: number | null;
  response_format?: {} | null;
  seed?: number | null;
  stop?:
    | string
    | []
    | [string]
    | [string, string]
    | [string, string, string]
    | [string, string, string, string]
    | null;
  stream?: boolean | null;
  stream_options?: StreamOptions | null;
  temperature?: number | null;
  tool_choice?: string | {} | null;
  tools?: Tool[] | null;
  top_logprobs?: number | null;
  top_p?: number | null;
  user?: string | null;
}
/**
 * One chat message; ``content`` is a string or a list of typed parts.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Message".
 */
export interface Message {
  content?: string | {}[] | null;
  name?: string | null;
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
 * ``{"type": "function", "function": {...}}``.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "Tool".
 */
export interface Tool {
  function: ToolFunction;
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
 * The last message of a streamed reply (``Llm-Stream: end``): totals for the stream.
 *
 * This interface was referenced by `PayloadSchemas`'s JSON-Schema
 * via the `definition` "StreamEnd".
 */
export interface StreamEnd {
  finish_reason?: string | null;
  usage?: Usage | null;
}
