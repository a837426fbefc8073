package edge

import (
	"context"
	"encoding/json"
	"strings"
)

// ResponsesRequest is an OpenAI Responses API request (the payload of llm.responses). Input
// is a text or a list of input items; the client sets "stream" itself; Extra carries any other
// field as is (reasoning, include, truncation ...).
type ResponsesRequest struct {
	Model              string            `json:"model"`
	Input              any               `json:"input,omitempty"`
	Instructions       string            `json:"instructions,omitempty"`
	PreviousResponseID string            `json:"previous_response_id,omitempty"`
	Background         *bool             `json:"background,omitempty"`
	Store              *bool             `json:"store,omitempty"`
	Temperature        *float64          `json:"temperature,omitempty"`
	TopP               *float64          `json:"top_p,omitempty"`
	MaxOutputTokens    *int              `json:"max_output_tokens,omitempty"`
	Tools              []map[string]any  `json:"tools,omitempty"`
	ToolChoice         any               `json:"tool_choice,omitempty"`
	Text               map[string]any    `json:"text,omitempty"`
	Metadata           map[string]string `json:"metadata,omitempty"`
	Extra              map[string]any    `json:"-"`
}

// Response is a Responses API response object: whole, stored, or a background one's current
// state (Status queued, in_progress, completed, incomplete, failed or cancelled).
type Response struct {
	ID                string         `json:"id"`
	Object            string         `json:"object"`
	CreatedAt         int64          `json:"created_at"`
	Status            string         `json:"status"`
	Model             string         `json:"model"`
	Output            []ResponseItem `json:"output"`
	Usage             *ResponseUsage `json:"usage,omitempty"`
	Error             *ResponseError `json:"error,omitempty"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details,omitempty"`
	PreviousResponseID string            `json:"previous_response_id,omitempty"`
	Background         bool              `json:"background"`
	Store              bool              `json:"store"`
	Metadata           map[string]string `json:"metadata,omitempty"`
}

// OutputText is the text of the response's assistant messages, joined (the openai SDKs'
// output_text).
func (r *Response) OutputText() string {
	var text strings.Builder
	for _, item := range r.Output {
		if item.Type != "message" {
			continue
		}
		for _, part := range item.Content {
			if part.Type == "output_text" {
				text.WriteString(part.Text)
			}
		}
	}
	return text.String()
}

// ResponseItem is one item of a response's output or of its input: a message (Role and
// Content), a function_call (CallID, Name, Arguments), a function_call_output (CallID,
// Output) or another kind (its fields in Raw).
type ResponseItem struct {
	ID        string            `json:"id,omitempty"`
	Type      string            `json:"type"`
	Status    string            `json:"status,omitempty"`
	Role      string            `json:"role,omitempty"`
	Content   []ResponseContent `json:"content,omitempty"`
	CallID    string            `json:"call_id,omitempty"`
	Name      string            `json:"name,omitempty"`
	Arguments string            `json:"arguments,omitempty"`
	Output    json.RawMessage   `json:"output,omitempty"`
	// Raw is the item as it came.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the item's JSON in Raw beside the fields it reads.
func (i *ResponseItem) UnmarshalJSON(data []byte) error {
	type plain ResponseItem
	if err := json.Unmarshal(data, (*plain)(i)); err != nil {
		return err
	}
	i.Raw = append(json.RawMessage(nil), data...)
	return nil
}

// ResponseContent is one part of a message item (output_text, input_text, refusal ...).
type ResponseContent struct {
	Type    string `json:"type"`
	Text    string `json:"text,omitempty"`
	Refusal string `json:"refusal,omitempty"`
}

// ResponseUsage is the token counts of a response.
type ResponseUsage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// ResponseError is a failed response's error.
type ResponseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ResponseDeleted is the answer of llm.responses.delete.
type ResponseDeleted struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

// InputItemsQuery asks for a page of a stored response's input items: after the item After
// (none: from the first), Limit of them (0: 20, at most 100), Order "asc" or "desc" (the
// default: newest first).
type InputItemsQuery struct {
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
	Order string `json:"order,omitempty"`
}

// InputItemList is a page of a stored response's input items.
type InputItemList struct {
	Object  string         `json:"object"`
	Data    []ResponseItem `json:"data"`
	FirstID string         `json:"first_id"`
	LastID  string         `json:"last_id"`
	HasMore bool           `json:"has_more"`
}

// ResponseStream is a streamed response: one MessageEvent per Responses API event,
// response.created to response.completed (response.incomplete or response.failed).
type ResponseStream = Stream[MessageEvent]

// Responses returns a whole Responses API response (llm.responses), tried as Chat is. It is
// stored unless the request says Store false; with Background true it is the queued response,
// read later with GetResponse.
func (c *Client) Responses(ctx context.Context, request ResponsesRequest, opts ...CallOption) (*Response, error) {
	body, err := encodeBody(request, request.Extra, false)
	if err != nil {
		return nil, err
	}
	reply, err := c.Call(ctx, c.subject(SubjectResponses, SubjectTenantResponses), body, opts...)
	if err != nil {
		return nil, err
	}
	var response Response
	return &response, json.Unmarshal(reply.Data, &response)
}

// StreamResponses starts a Responses API stream: one MessageEvent per event (its name, and
// its JSON with "type" and "sequence_number"), tried and cancelled as Stream is.
func (c *Client) StreamResponses(ctx context.Context, request ResponsesRequest, opts ...CallOption) (*ResponseStream, error) {
	body, err := encodeBody(request, request.Extra, true)
	if err != nil {
		return nil, err
	}
	return startStream(c, ctx, c.subject(SubjectResponses, SubjectTenantResponses), body, opts, decodeEvent)
}

// StreamResponse follows a streamed background response (one created with Background and
// streamed): its events after the sequence number startingAfter (-1: from the first), live up
// to its last one. To resume a stream that was cut off, pass the last sequence_number
// received. A response not created so is ErrBadRequest.
func (c *Client) StreamResponse(ctx context.Context, id string, startingAfter int, opts ...CallOption) (*ResponseStream, error) {
	body, err := json.Marshal(map[string]any{"id": id, "stream": true, "starting_after": startingAfter})
	if err != nil {
		return nil, err
	}
	return startStream(c, ctx, SubjectResponsesGet, body, opts, decodeEvent)
}

// GetResponse returns a stored response (llm.responses.get): a background one's current
// status. A response of another tenant, or none, is ErrNotFound.
func (c *Client) GetResponse(ctx context.Context, id string, opts ...CallOption) (*Response, error) {
	var response Response
	return &response, c.byID(ctx, SubjectResponsesGet, map[string]any{"id": id}, &response, opts)
}

// DeleteResponse deletes a stored response (llm.responses.delete); a background one still
// running is cancelled first.
func (c *Client) DeleteResponse(ctx context.Context, id string, opts ...CallOption) (*ResponseDeleted, error) {
	var deleted ResponseDeleted
	return &deleted, c.byID(ctx, SubjectResponsesDelete, map[string]any{"id": id}, &deleted, opts)
}

// CancelResponse cancels a background response (llm.responses.cancel) and returns it: status
// cancelled, or as it was when it had finished already. A response that is not a background
// one is ErrBadRequest.
func (c *Client) CancelResponse(ctx context.Context, id string, opts ...CallOption) (*Response, error) {
	var response Response
	return &response, c.byID(ctx, SubjectResponsesCancel, map[string]any{"id": id}, &response, opts)
}

// ResponseInputItems returns a page of a stored response's input items
// (llm.responses.input_items).
func (c *Client) ResponseInputItems(ctx context.Context, id string, query InputItemsQuery, opts ...CallOption) (*InputItemList, error) {
	fields, err := mergedFields(query, map[string]any{"id": id})
	if err != nil {
		return nil, err
	}
	var list InputItemList
	return &list, c.byID(ctx, SubjectResponsesInputItems, fields, &list, opts)
}

// byID asks one of the stored responses' subjects and decodes its answer into out.
func (c *Client) byID(ctx context.Context, subject string, query any, out any, opts []CallOption) error {
	body, err := json.Marshal(query)
	if err != nil {
		return err
	}
	reply, err := c.Call(ctx, subject, body, opts...)
	if err != nil {
		return err
	}
	return json.Unmarshal(reply.Data, out)
}
