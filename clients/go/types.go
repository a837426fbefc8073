package edge

import (
	"encoding/json"
)

// ChatRequest is an OpenAI chat-completions request (the payload of llm.chat). The client
// sets "stream" itself; Extra carries any other field as is (a provider's own parameters).
type ChatRequest struct {
	Model               string            `json:"model"`
	Messages            []Message         `json:"messages"`
	Tools               []Tool            `json:"tools,omitempty"`
	ToolChoice          any               `json:"tool_choice,omitempty"`
	ResponseFormat      map[string]any    `json:"response_format,omitempty"`
	Temperature         *float64          `json:"temperature,omitempty"`
	TopP                *float64          `json:"top_p,omitempty"`
	N                   *int              `json:"n,omitempty"`
	Stop                []string          `json:"stop,omitempty"`
	MaxTokens           *int              `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int              `json:"max_completion_tokens,omitempty"`
	Seed                *int64            `json:"seed,omitempty"`
	User                string            `json:"user,omitempty"`
	Metadata            map[string]string `json:"metadata,omitempty"`
	StreamOptions       *StreamOptions    `json:"stream_options,omitempty"`
	Extra               map[string]any    `json:"-"`
}

// Message is one chat message; Content is a string or a list of typed parts.
type Message struct {
	Role       string     `json:"role"`
	Content    any        `json:"content,omitempty"`
	Name       string     `json:"name,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

// Tool is a function offered to the model.
type Tool struct {
	Type     string       `json:"type"`
	Function ToolFunction `json:"function"`
}

// ToolFunction describes a callable function.
type ToolFunction struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Parameters  map[string]any `json:"parameters,omitempty"`
}

// ToolCall is an assistant's request to call a tool.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function FunctionCall `json:"function"`
}

// FunctionCall names the function and its JSON arguments.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// StreamOptions: IncludeUsage adds a usage-only chunk at the end of a stream.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage,omitempty"`
}

// Usage is the token counts of a completion.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// ChatCompletion is a whole answer (chat.completion).
type ChatCompletion struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"`
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	Choices           []Choice `json:"choices"`
	Usage             *Usage   `json:"usage,omitempty"`
	SystemFingerprint string   `json:"system_fingerprint,omitempty"`
}

// Choice is one choice of a ChatCompletion.
type Choice struct {
	Index        int             `json:"index"`
	Message      ResponseMessage `json:"message"`
	FinishReason string          `json:"finish_reason"`
}

// ResponseMessage is the assistant's message in a Choice.
type ResponseMessage struct {
	Role      string     `json:"role"`
	Content   string     `json:"content"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	Refusal   string     `json:"refusal,omitempty"`
}

// ChatCompletionChunk is one streamed piece of an answer (chat.completion.chunk).
type ChatCompletionChunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []ChunkChoice `json:"choices"`
	Usage   *Usage        `json:"usage,omitempty"`
}

// ChunkChoice is one choice of a chunk.
type ChunkChoice struct {
	Index        int    `json:"index"`
	Delta        Delta  `json:"delta"`
	FinishReason string `json:"finish_reason"`
}

// Delta is the content a chunk adds.
type Delta struct {
	Role      string            `json:"role,omitempty"`
	Content   string            `json:"content,omitempty"`
	ToolCalls []json.RawMessage `json:"tool_calls,omitempty"`
	Refusal   string            `json:"refusal,omitempty"`
}

// StreamEnd is the last message of a stream (Llm-Stream: end): its totals.
type StreamEnd struct {
	Usage        *Usage `json:"usage,omitempty"`
	FinishReason string `json:"finish_reason,omitempty"`
}

// Model is one entry of the model list (llm.models).
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// MessagesRequest is an Anthropic Messages API request (the payload of llm.messages); the
// client sets "stream" itself; Extra carries any other field as is.
type MessagesRequest struct {
	Model         string            `json:"model"`
	MaxTokens     int               `json:"max_tokens"`
	Messages      []MessageParam    `json:"messages"`
	System        any               `json:"system,omitempty"`
	Temperature   *float64          `json:"temperature,omitempty"`
	TopP          *float64          `json:"top_p,omitempty"`
	TopK          *int              `json:"top_k,omitempty"`
	StopSequences []string          `json:"stop_sequences,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	Extra         map[string]any    `json:"-"`
}

// MessageParam is one message of a MessagesRequest; Content is a string or content blocks.
type MessageParam struct {
	Role    string `json:"role"`
	Content any    `json:"content"`
}

// AnthropicMessage is a whole Messages API answer (type "message").
type AnthropicMessage struct {
	ID           string         `json:"id"`
	Type         string         `json:"type"`
	Role         string         `json:"role"`
	Model        string         `json:"model"`
	Content      []ContentBlock `json:"content"`
	StopReason   string         `json:"stop_reason"`
	StopSequence string         `json:"stop_sequence,omitempty"`
	Usage        AnthropicUsage `json:"usage"`
}

// ContentBlock is one block of an AnthropicMessage (text, tool_use ...).
type ContentBlock struct {
	Type  string          `json:"type"`
	Text  string          `json:"text,omitempty"`
	ID    string          `json:"id,omitempty"`
	Name  string          `json:"name,omitempty"`
	Input json.RawMessage `json:"input,omitempty"`
}

// AnthropicUsage is the token counts of a Messages answer.
type AnthropicUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

// MessageEvent is one event of a Messages stream: its SSE name and its JSON body.
type MessageEvent struct {
	Event string
	Data  json.RawMessage
}

// encodeBody is the request's JSON with its Extra fields and "stream" set as the call
// requires (a whole call sends no stream_options).
func encodeBody(request any, extra map[string]any, stream bool) ([]byte, error) {
	fields, err := mergedFields(request, extra)
	if err != nil {
		return nil, err
	}
	fields["stream"] = json.RawMessage(jsonBool(stream))
	if !stream {
		delete(fields, "stream_options")
	}
	return json.Marshal(fields)
}

// encodeFields is the request's JSON with its Extra fields (a request that is never streamed).
func encodeFields(request any, extra map[string]any) ([]byte, error) {
	fields, err := mergedFields(request, extra)
	if err != nil {
		return nil, err
	}
	return json.Marshal(fields)
}

// mergedFields is the request's top-level fields, its Extra fields among them.
func mergedFields(request any, extra map[string]any) (map[string]json.RawMessage, error) {
	raw, err := json.Marshal(request)
	if err != nil {
		return nil, err
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	for name, value := range extra {
		encoded, err := json.Marshal(value)
		if err != nil {
			return nil, err
		}
		fields[name] = encoded
	}
	return fields, nil
}

func jsonBool(flag bool) string {
	if flag {
		return "true"
	}
	return "false"
}
