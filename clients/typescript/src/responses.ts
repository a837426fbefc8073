// The shapes of embeddings and the OpenAI Responses API that the generated types leave open:
// the response object, its items, stored responses' answers, and a stream's events.
//
//   const response = await client.responses({ model: "gpt-4o-mini", input: "Hello" });
//   console.log(outputText(response));
//   for await (const { event, data } of client.streamResponses({ model: "gpt-4o-mini", input: "Hi" })) ...
//   const again = await client.response(response.id);
//   await client.deleteResponse(response.id);
import type { Embedding, EmbeddingsRequest, ResponsesRequest } from "./types.js";

/** An embeddings request: the generated `EmbeddingsRequest`, and any field a provider takes
 * (`input_type` ...), passed as is. */
export type EmbeddingsBody = EmbeddingsRequest & { [field: string]: unknown };

/** A Responses request: the generated `ResponsesRequest` (the client sets `stream`), and any
 * other field (`reasoning`, `include`, `truncation` ...), passed as is. */
export type ResponsesBody = Omit<ResponsesRequest, "stream"> & { [field: string]: unknown };

/** One part of a message item: `output_text`, `input_text`, `refusal` ... */
export interface ResponseContent {
  type: string;
  text?: string;
  [field: string]: unknown;
}

/** One item of a response's output or input: a `message`, a `function_call`, a
 * `function_call_output`, or another kind. */
export interface ResponseItem {
  id?: string;
  type: string;
  status?: string;
  role?: string;
  content?: ResponseContent[];
  call_id?: string;
  name?: string;
  arguments?: string;
  [field: string]: unknown;
}

/** A Responses API `response` (whole, stored, or a background one's current state). */
export interface ResponseObject {
  id: string;
  object: "response";
  created_at: number;
  status: "queued" | "in_progress" | "completed" | "incomplete" | "failed" | "cancelled";
  model: string;
  output: ResponseItem[];
  usage: { input_tokens: number; output_tokens: number; total_tokens: number; [field: string]: unknown } | null;
  error: { code: string; message: string } | null;
  incomplete_details: { reason: string } | null;
  previous_response_id: string | null;
  background: boolean;
  store: boolean;
  metadata: Record<string, string>;
  [field: string]: unknown;
}

/** The answer of `llm.responses.delete`. */
export interface ResponseDeleted {
  id: string;
  object: "response";
  deleted: boolean;
}

/** A page of a stored response's input items: after the item `after`, `limit` of them (20,
 * at most 100), `order` `desc` (the default: newest first) or `asc`. */
export interface InputItemsQuery {
  after?: string;
  limit?: number;
  order?: "asc" | "desc";
}

/** A page of a stored response's input items (an OpenAI list). */
export interface InputItemList {
  object: "list";
  data: ResponseItem[];
  first_id: string | null;
  last_id: string | null;
  has_more: boolean;
}

/** One event of a named-event stream (the Responses API's): its name, and its JSON with
 * `type` and `sequence_number`. */
export interface StreamEvent {
  event: string;
  data: { type: string; sequence_number: number; [field: string]: unknown };
}

/** The text of a response's assistant messages, joined (the openai SDKs' `output_text`). */
export function outputText(response: ResponseObject): string {
  return response.output
    .filter((item) => item.type === "message")
    .flatMap((item) => item.content ?? [])
    .filter((part) => part.type === "output_text")
    .map((part) => part.text ?? "")
    .join("");
}

/** An embedding's components: its floats, or (`encoding_format: "base64"`, a quarter of the
 * size on the wire) its little-endian float32s decoded. */
export function embeddingVector(item: Embedding): number[] {
  if (typeof item.embedding !== "string") return item.embedding;
  const bytes = Buffer.from(item.embedding, "base64");
  if (bytes.length % 4 !== 0) throw new TypeError(`a base64 embedding of ${bytes.length} bytes is not float32s`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  return Array.from({ length: bytes.length / 4 }, (_, i) => view.getFloat32(4 * i, true));
}
