package edge_test

// The client against a real stack (two brokers, mock and fake upstreams: see
// tests/support/harness.py), which the tests steer over NATS (harness.*): chat, streams,
// Anthropic messages, models, typed errors, cancels by context, deadlines, a broker lost
// mid-call and batches.

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"llm-edge/edge"
)

func stack(t *testing.T, opts edge.Options) *edge.Client {
	t.Helper()
	return client(t, serverURL(t, "EDGE_NATS_URL"), opts)
}

func within(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// unique makes a prompt no cache has seen.
func unique(text string) string { return fmt.Sprintf("%s %d", text, time.Now().UnixNano()) }

func TestChatReturnsATypedCompletion(t *testing.T) {
	c := stack(t, edge.Options{})
	reply, err := c.Chat(within(t, 30*time.Second), hello("gpt-4o-mini", "Hello there"), edge.WithRequestID("go-chat-1"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^Mock reply \[[0-9a-f]{8}\]: Hello there$`).MatchString(reply.Choices[0].Message.Content) {
		t.Errorf("content %q", reply.Choices[0].Message.Content)
	}
	if reply.Model != "gpt-4o-mini" || reply.Usage == nil || reply.Usage.TotalTokens == 0 {
		t.Errorf("%+v", reply)
	}
}

func TestStreamYieldsTheChunksInOrderThenTheEnd(t *testing.T) {
	c := stack(t, edge.Options{})
	ctx := within(t, 30*time.Second)
	whole, err := c.Chat(ctx, hello("gpt-4o-mini", "stream me"))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := c.Stream(ctx, hello("gpt-4o-mini", "stream me"), edge.WithCacheControl("no-cache"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var text strings.Builder
	chunks := 0
	for stream.Next() {
		chunks++
		if stream.Current().Object != "chat.completion.chunk" {
			t.Errorf("chunk %+v", stream.Current())
		}
		for _, choice := range stream.Current().Choices {
			text.WriteString(choice.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if chunks <= 2 || text.String() != whole.Choices[0].Message.Content {
		t.Errorf("%d chunks: %q, want %q", chunks, text.String(), whole.Choices[0].Message.Content)
	}
	if stream.End() == nil || stream.End().FinishReason != "stop" {
		t.Errorf("end %+v", stream.End())
	}
}

func TestMessagesAnswerInTheAnthropicShapeWholeAndStreamed(t *testing.T) {
	c := stack(t, edge.Options{})
	ctx := within(t, 30*time.Second)
	request := edge.MessagesRequest{Model: "gpt-4o-mini", MaxTokens: 64,
		Messages: []edge.MessageParam{{Role: "user", Content: "Hello there"}}}
	message, err := c.Messages(ctx, request)
	if err != nil {
		t.Fatal(err)
	}
	if message.Type != "message" || message.Role != "assistant" || !strings.HasSuffix(message.Content[0].Text, ": Hello there") || message.Usage.OutputTokens == 0 {
		t.Errorf("%+v", message)
	}
	stream, err := c.StreamMessages(ctx, request, edge.WithCacheControl("no-cache"))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var events []string
	for stream.Next() {
		events = append(events, stream.Current().Event)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(events) < 4 || events[0] != "message_start" || events[len(events)-1] != "message_stop" {
		t.Errorf("events %v", events)
	}
}

func TestModelsListsTheServedModels(t *testing.T) {
	models, err := stack(t, edge.Options{}).Models(within(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, model := range models {
		names[model.ID] = true
	}
	if !names["gpt-4o-mini"] || !names["thinker"] {
		t.Errorf("models %v", names)
	}
}

func TestFailuresAreTypedWholeOrStreamed(t *testing.T) {
	c := stack(t, edge.Options{Retry: &edge.RetryPolicy{Attempts: 2, AttemptTimeout: 5 * time.Second}})
	ctx := within(t, 30*time.Second)
	_, err := c.Chat(ctx, hello("no-such-model", "hi"))
	var failure *edge.APIError
	if !errors.As(err, &failure) || !errors.Is(err, edge.ErrNotFound) || !errors.Is(err, edge.ErrAPI) || !errors.Is(err, edge.ErrEdge) {
		t.Fatalf("%v", err)
	}
	if failure.Status != 404 || failure.Code != "model_not_found" || failure.RequestID == "" {
		t.Errorf("%+v", failure)
	}
	stream, err := c.Stream(ctx, hello("no-such-model", "hi"))
	if err != nil {
		t.Fatal(err)
	}
	if stream.Next() || !errors.Is(stream.Err(), edge.ErrNotFound) {
		t.Errorf("a stream of an unknown model: %v", stream.Err())
	}
	if _, err := c.Chat(ctx, edge.ChatRequest{Model: "gpt-4o-mini", Messages: []edge.Message{}}); !errors.Is(err, edge.ErrBadRequest) {
		t.Errorf("no messages: %v", err)
	}
	_, err = c.Call(ctx, "llm.nobody.serves.this", nil)
	if !errors.As(err, &failure) || failure.Kind != edge.ErrUnavailable || failure.Code != "no_broker" {
		t.Errorf("nobody serves it: %v", err)
	}
	nobody, err := c.StreamCall(ctx, "llm.nobody.serves.this", []byte(`{"stream": true}`))
	if err != nil {
		t.Fatal(err)
	}
	if nobody.Next() || !errors.As(nobody.Err(), &failure) || failure.Code != "no_broker" {
		t.Errorf("nobody serves the stream: %v", nobody.Err())
	}
}

// calls is the upstream calls a fake received: with after >= 0, once it received more.
func calls(t *testing.T, c *edge.Client, fake string, after int) int {
	t.Helper()
	return int(ask(t, c.Conn(), "harness.calls", map[string]any{"fake": fake, "after": after})["calls"].(float64))
}

// hangups is the calls whose caller hung up on the hanger: with after >= 0, once there are
// more.
func hangups(t *testing.T, c *edge.Client, after int) int {
	t.Helper()
	return int(ask(t, c.Conn(), "harness.hangups", map[string]any{"after": after})["hangups"].(float64))
}

func TestCancellingTheContextCancelsAStreamUpstream(t *testing.T) {
	c := stack(t, edge.Options{})
	before, hungUp := calls(t, c, "hanger", -1), hangups(t, c, -1)
	ctx, cancel := context.WithCancel(within(t, 30*time.Second))
	stream, err := c.Stream(ctx, hello("hanger", unique("stream, then leave")))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	calls(t, c, "hanger", before) // the upstream call began
	cancel()                      // no Next is waiting: the stream cancels itself upstream
	if hangups(t, c, hungUp) != hungUp+1 {
		t.Fatal("the upstream call of a cancelled stream went on")
	}
	if stream.Next() || !errors.Is(stream.Err(), context.Canceled) {
		t.Errorf("after the cancel: %v", stream.Err())
	}
}

func TestCancellingTheContextCancelsAWholeCallUpstream(t *testing.T) {
	c := stack(t, edge.Options{})
	before, hungUp := calls(t, c, "hanger", -1), hangups(t, c, -1)
	ctx, cancel := context.WithCancel(within(t, 30*time.Second))
	failed := make(chan error, 1)
	go func() {
		_, err := c.Chat(ctx, hello("hanger", unique("whole, then leave")))
		failed <- err
	}()
	calls(t, c, "hanger", before)
	cancel()
	if err := <-failed; !errors.Is(err, context.Canceled) {
		t.Errorf("%v", err)
	}
	if hangups(t, c, hungUp) != hungUp+1 {
		t.Fatal("the upstream call of a cancelled call went on")
	}
}

func TestTheContextsDeadlineBoundsACall(t *testing.T) {
	c := stack(t, edge.Options{})
	started := time.Now()
	_, err := c.Chat(within(t, 500*time.Millisecond), hello("hanger", unique("too slow")))
	// the broker's 504 at the deadline, or the client's own when it comes first
	if !errors.Is(err, edge.ErrDeadline) {
		t.Fatalf("%v", err)
	}
	if waited := time.Since(started); waited > 10*time.Second {
		t.Errorf("waited %v", waited)
	}
}

// loseTheBroker asks the harness to cut the broker working on the thinker's next call off.
func loseTheBroker(t *testing.T, c *edge.Client, before int) {
	t.Helper()
	if answer := ask(t, c.Conn(), "harness.lose-broker", map[string]any{"after": before}); answer["lost"] != true {
		t.Fatalf("no broker was lost: %v", answer)
	}
}

// The thinker thinks 3 s; the broker working on a call is lost meanwhile: the client hears
// neither an answer nor a keepalive for 1 s and sends the call again under its id; the other
// broker takes it and it is answered from the first call, still running at its worker.
var patient = edge.RetryPolicy{Attempts: 4, AttemptTimeout: time.Second, Backoff: 50 * time.Millisecond, MaxBackoff: time.Second}

func TestABrokerLostMidCallCostsNoSecondUpstreamCall(t *testing.T) {
	c := stack(t, edge.Options{Retry: &patient})
	before := calls(t, c, "thinker", -1)
	type result struct {
		reply *edge.ChatCompletion
		err   error
	}
	done := make(chan result, 1)
	go func() {
		reply, err := c.Chat(within(t, 30*time.Second), hello("thinker", unique("why?")))
		done <- result{reply, err}
	}()
	loseTheBroker(t, c, before)
	got := <-done
	if got.err != nil || got.reply.Choices[0].Message.Content != "upstream says hi to o3-deep" {
		t.Fatalf("%+v %v", got.reply, got.err)
	}
	if n := calls(t, c, "thinker", -1); n != before+1 {
		t.Errorf("%d upstream calls", n-before)
	}
}

func TestAStreamWhoseBrokerIsLostBeforeItsFirstChunkIsJoinedByItsRetry(t *testing.T) {
	c := stack(t, edge.Options{Retry: &patient})
	before := calls(t, c, "thinker", -1)
	stream, err := c.Stream(within(t, 30*time.Second), hello("thinker", unique("why, streamed?")))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	loseTheBroker(t, c, before)
	text, err := readStream(t, stream)
	if err != nil || text != "upstream streams to o3-deep" {
		t.Fatalf("%q %v", text, err)
	}
	if n := calls(t, c, "thinker", -1); n != before+1 {
		t.Errorf("%d upstream calls", n-before)
	}
}

func TestBatchesRunAndAreReadAndListedAndAFinishedOneCannotBeCancelled(t *testing.T) {
	c := stack(t, edge.Options{})
	ctx := within(t, 60*time.Second)
	const count = 100
	var lines []edge.BatchLine
	for n := 0; n < count; n++ {
		id := fmt.Sprintf("line-%d", n)
		lines = append(lines, edge.BatchLine{CustomID: id, Method: "POST", URL: edge.ChatEndpoint,
			Body: hello("gpt-4o-mini", "line "+id)})
	}
	batch, err := c.Batches.Submit(ctx, edge.BatchSubmit{Lines: lines, Metadata: map[string]string{"origin": "go"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(batch.ID, "batch_") || batch.Metadata["origin"] != "go" {
		t.Fatalf("%+v", batch)
	}
	var seen []string
	done, err := c.Batches.Wait(ctx, batch.ID, func(b *edge.Batch) { seen = append(seen, b.Status) })
	if err != nil {
		t.Fatal(err)
	}
	if done.Status != "completed" || done.RequestCounts.Completed != count || done.OutputFileID == "" || seen[len(seen)-1] != "completed" {
		t.Errorf("%+v, seen %v", done, seen)
	}
	results, err := c.Batches.Results(ctx, done)
	if err != nil {
		t.Fatal(err)
	}
	answered := map[string]int{} // custom_id -> times answered 200: each exactly once
	for _, result := range results {
		if result.Response != nil && result.Response.StatusCode == 200 {
			answered[result.CustomID]++
		}
	}
	for _, line := range lines {
		if answered[line.CustomID] != 1 {
			t.Errorf("%s answered %d times", line.CustomID, answered[line.CustomID])
		}
	}
	if len(results) != count {
		t.Errorf("%d results for %d lines", len(results), count)
	}
	if _, err := c.Batches.File(ctx, "file_none"); !errors.Is(err, edge.ErrNotFound) {
		t.Errorf("an unknown file: %v", err)
	}
	got, err := c.Batches.Get(ctx, batch.ID)
	if err != nil || got.Status != "completed" {
		t.Errorf("get: %+v %v", got, err)
	}
	list, err := c.Batches.List(ctx, 100, "")
	if err != nil || len(list.Data) == 0 || list.Data[0].ID != batch.ID {
		t.Errorf("the newest batch first: %+v %v", list, err)
	}
	_, err = c.Batches.Cancel(ctx, batch.ID)
	var failure *edge.APIError
	if !errors.As(err, &failure) || failure.Kind != edge.ErrConflict || failure.Status != 409 {
		t.Errorf("cancelling a completed batch: %v", err)
	}
	if _, err := c.Batches.Get(ctx, "batch_none"); !errors.Is(err, edge.ErrNotFound) {
		t.Errorf("an unknown batch: %v", err)
	}
}
