package edge_test

// Embeddings and the Responses API against the real stack (see stack_test.go): vectors of
// two inputs in both encodings, a whole response, a streamed one's events, and a stored
// response read, listed and deleted.

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"llm-edge/edge"
)

func TestEmbeddingsOfTwoInputsAreAVectorEachOfTheDimensionsAsked(t *testing.T) {
	c := stack(t, edge.Options{})
	ctx := within(t, 30*time.Second)
	dimensions := 64
	request := edge.EmbeddingsRequest{Model: "gpt-4o-mini", Input: []string{"first text", "second text"}, Dimensions: &dimensions}
	list, err := c.Embeddings(ctx, request)
	if err != nil {
		t.Fatal(err)
	}
	if list.Object != "list" || len(list.Data) != 2 || list.Usage.PromptTokens == 0 {
		t.Fatalf("%+v", list)
	}
	for i, item := range list.Data {
		if item.Index != i || len(item.Embedding) != dimensions || math.Abs(norm(item.Embedding)-1) > 1e-5 {
			t.Errorf("vector %d: index %d, %d dimensions, norm %f", i, item.Index, len(item.Embedding), norm(item.Embedding))
		}
	}
	if list.Data[0].Embedding[0] == list.Data[1].Embedding[0] {
		t.Error("two inputs, one vector")
	}
	request.EncodingFormat = "base64" // float32s in base64: the same vectors, decoded
	encoded, err := c.Embeddings(ctx, request)
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Data {
		if !equal(encoded.Data[i].Embedding, list.Data[i].Embedding) {
			t.Errorf("vector %d in base64 differs: %v", i, encoded.Data[i].Embedding[:3])
		}
	}
}

func norm(v edge.Vector) float64 {
	sum := 0.0
	for _, x := range v {
		sum += x * x
	}
	return math.Sqrt(sum)
}

func equal(a, b edge.Vector) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAWholeResponseIsCompleted(t *testing.T) {
	c := stack(t, edge.Options{})
	input := unique("Hello there")
	response, err := c.Responses(within(t, 30*time.Second), edge.ResponsesRequest{Model: "gpt-4o-mini", Input: input, Instructions: "Be brief."})
	if err != nil {
		t.Fatal(err)
	}
	if response.Object != "response" || !strings.HasPrefix(response.ID, "resp_") || response.Status != "completed" {
		t.Errorf("%+v", response)
	}
	if !strings.HasSuffix(response.OutputText(), ": "+input) || response.Output[0].Role != "assistant" {
		t.Errorf("output %q %+v", response.OutputText(), response.Output)
	}
	if response.Usage == nil || response.Usage.OutputTokens == 0 || !response.Store {
		t.Errorf("usage %+v, store %v", response.Usage, response.Store)
	}
}

// event is the part of a Responses stream event the test reads.
type event struct {
	Type           string         `json:"type"`
	SequenceNumber int            `json:"sequence_number"`
	Delta          string         `json:"delta"`
	Response       *edge.Response `json:"response"`
}

func TestAStreamedResponseIsItsEventsInOrderEndingWithCompleted(t *testing.T) {
	c := stack(t, edge.Options{})
	input := unique("stream me")
	stream, err := c.StreamResponses(within(t, 30*time.Second), edge.ResponsesRequest{Model: "gpt-4o-mini", Input: input})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var names []string
	var text strings.Builder
	var last event
	for stream.Next() {
		if err := json.Unmarshal(stream.Current().Data, &last); err != nil {
			t.Fatal(err)
		}
		if last.Type != stream.Current().Event || last.SequenceNumber != len(names) {
			t.Errorf("event %d: %s, type %s, number %d", len(names), stream.Current().Event, last.Type, last.SequenceNumber)
		}
		names = append(names, last.Type)
		if last.Type == "response.output_text.delta" {
			text.WriteString(last.Delta)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) < 5 || names[0] != "response.created" || names[1] != "response.in_progress" || names[len(names)-1] != "response.completed" {
		t.Fatalf("events %v", names)
	}
	if last.Response == nil || last.Response.Status != "completed" || last.Response.OutputText() != text.String() || !strings.HasSuffix(text.String(), ": "+input) {
		t.Errorf("deltas %q, the completed response %+v", text.String(), last.Response)
	}
}

func TestAStoredResponseIsReadListedAndDeleted(t *testing.T) {
	c := stack(t, edge.Options{})
	ctx := within(t, 30*time.Second)
	input := unique("keep me")
	created, err := c.Responses(ctx, edge.ResponsesRequest{Model: "gpt-4o-mini", Input: input})
	if err != nil {
		t.Fatal(err)
	}
	stored, err := c.GetResponse(ctx, created.ID)
	if err != nil || stored.ID != created.ID || stored.Status != "completed" || stored.OutputText() != created.OutputText() {
		t.Fatalf("%+v %v", stored, err)
	}
	items, err := c.ResponseInputItems(ctx, created.ID, edge.InputItemsQuery{Order: "asc"})
	if err != nil {
		t.Fatal(err)
	}
	if len(items.Data) != 1 || items.HasMore || items.Data[0].Role != "user" || items.Data[0].Content[0].Text != input || items.FirstID != items.Data[0].ID {
		t.Errorf("input items %+v", items)
	}
	_, err = c.CancelResponse(ctx, created.ID)
	var failure *edge.APIError
	if !errors.As(err, &failure) || failure.Kind != edge.ErrBadRequest {
		t.Errorf("cancelling a response that is not a background one: %v", err)
	}
	deleted, err := c.DeleteResponse(ctx, created.ID)
	if err != nil || !deleted.Deleted || deleted.ID != created.ID {
		t.Fatalf("%+v %v", deleted, err)
	}
	if _, err := c.GetResponse(ctx, created.ID); !errors.Is(err, edge.ErrNotFound) {
		t.Errorf("a deleted response: %v", err)
	}
	if _, err := c.DeleteResponse(ctx, created.ID); !errors.Is(err, edge.ErrNotFound) {
		t.Errorf("deleting it again: %v", err)
	}
}

func TestABackgroundStreamIsResumedAfterASequenceNumber(t *testing.T) {
	c := stack(t, edge.Options{})
	ctx := within(t, 30*time.Second)
	background := true
	live, err := c.StreamResponses(ctx, edge.ResponsesRequest{Model: "gpt-4o-mini", Input: unique("run me behind"), Background: &background})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	var events []edge.MessageEvent
	for live.Next() {
		events = append(events, live.Current())
	}
	if err := live.Err(); err != nil || len(events) < 5 || events[len(events)-1].Event != "response.completed" {
		t.Fatalf("the live stream: %d events, %v", len(events), err)
	}
	var created event
	if err := json.Unmarshal(events[0].Data, &created); err != nil || created.Response == nil || !created.Response.Background {
		t.Fatalf("%s %v", events[0].Data, err)
	}
	resumed, err := c.StreamResponse(ctx, created.Response.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	var again []edge.MessageEvent
	for resumed.Next() {
		again = append(again, resumed.Current())
	}
	if err := resumed.Err(); err != nil || len(again) != len(events)-2 {
		t.Fatalf("resumed after 1: %d events of %d, %v", len(again), len(events), err)
	}
	for i, got := range again {
		if want := events[i+2]; got.Event != want.Event || string(got.Data) != string(want.Data) {
			t.Errorf("event %d: %s %s, live %s %s", i+2, got.Event, got.Data, want.Event, want.Data)
		}
	}
	plain, err := c.Responses(ctx, edge.ResponsesRequest{Model: "gpt-4o-mini", Input: unique("not behind")})
	if err != nil {
		t.Fatal(err)
	}
	refused, err := c.StreamResponse(ctx, plain.ID, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	if refused.Next() || !errors.Is(refused.Err(), edge.ErrBadRequest) {
		t.Errorf("following a response not streamed in the background: %v", refused.Err())
	}
}
