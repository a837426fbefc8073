package edge_test

// The client against a bare nats-server of 1 MiB messages and a stand-in broker that answers
// llm.chat as each request's content says: the protocol cases a real broker never sends (a
// gap in a stream, a broker that fell silent once). No assertion is timed; every wait is bounded.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"llm-edge/edge"
)

const (
	bareMaxPayload = 1024 * 1024
	// silence is the clients' attempt timeout here: the stand-in thinks for three of it.
	silence = 600 * time.Millisecond
)

var fastRetry = edge.RetryPolicy{Attempts: 3, AttemptTimeout: silence}

// standIn is the broker: it answers each request as the script in its first message's content
// says, and records every request and cancel.
type standIn struct {
	nc   *nats.Conn
	seen *recorder
	wg   sync.WaitGroup
	stop chan struct{}
}

func startStandIn(t *testing.T) (*standIn, string) {
	url := serverURL(t, "EDGE_BARE_NATS_URL")
	s := &standIn{nc: connect(t, url), seen: newRecorder(), stop: make(chan struct{})}
	subject := "llm.standin." + strings.ReplaceAll(t.Name(), "/", ".")
	for _, served := range []string{subject, edge.SubjectChat, edge.SubjectMessages} {
		if _, err := s.nc.Subscribe(served, s.serve); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.nc.Subscribe(edge.SubjectCancel, s.seen.cancel); err != nil {
		t.Fatal(err)
	}
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(s.stop)
		s.wg.Wait()
	})
	return s, subject
}

func (s *standIn) reply(request *nats.Msg, header map[string]string, body any) {
	msg := &nats.Msg{Subject: request.Reply, Header: nats.Header{}}
	msg.Header.Set(edge.HeaderRequestID, request.Header.Get(edge.HeaderRequestID))
	for name, value := range header {
		msg.Header.Set(name, value)
	}
	if body != nil {
		msg.Data, _ = json.Marshal(body)
	}
	_ = s.nc.PublishMsg(msg)
}

func chunk(content string) map[string]any {
	return map[string]any{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
		"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": content}}}}
}

func completion(content string) map[string]any {
	return map[string]any{"id": "c", "object": "chat.completion", "created": 0, "model": "m",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": content}}}}
}

func (s *standIn) answer(request *nats.Msg, stream bool, words ...string) {
	if !stream {
		s.reply(request, nil, completion(strings.Join(words, "")))
		return
	}
	for i, word := range words {
		s.reply(request, map[string]string{edge.HeaderStream: "chunk", edge.HeaderSeq: fmt.Sprint(i)}, chunk(word))
	}
	end := map[string]string{edge.HeaderStream: "end", edge.HeaderSeq: fmt.Sprint(len(words))}
	s.reply(request, end, map[string]any{"finish_reason": "stop"})
}

// think sends keepalives every quarter of the silence bound for three of it, then answers.
func (s *standIn) think(request *nats.Msg, answer func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(silence / 4)
		defer tick.Stop()
		done := time.NewTimer(3 * silence)
		defer done.Stop()
		for {
			select {
			case <-tick.C:
				s.reply(request, map[string]string{edge.HeaderStream: "keepalive"}, nil)
			case <-done.C:
				answer()
				return
			case <-s.stop:
				return
			}
		}
	}()
}

func (s *standIn) serve(request *nats.Msg) {
	attempt := s.seen.request(request)
	var body struct {
		Stream   bool `json:"stream"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	if json.Unmarshal(request.Data, &body) != nil || len(body.Messages) == 0 {
		return
	}
	switch body.Messages[0].Content {
	case "think":
		s.think(request, func() { s.answer(request, body.Stream, "thought ", "it over") })
	case "lost-once": // the first attempt's broker died with it
		if attempt > 1 {
			s.answer(request, body.Stream, "second ", "try")
		}
	case "busy-once":
		if attempt == 1 {
			s.reply(request, map[string]string{edge.HeaderStatus: "503", edge.HeaderRetryAfter: "0"},
				map[string]any{"error": map[string]any{"message": "busy", "type": "t", "code": "no_provider_available"}})
		} else {
			s.answer(request, body.Stream, "second ", "try")
		}
	case "fails-after-a-chunk":
		s.reply(request, map[string]string{edge.HeaderStream: "chunk", edge.HeaderSeq: "0"}, chunk("one "))
		s.reply(request, map[string]string{edge.HeaderStream: "error", edge.HeaderSeq: "1", edge.HeaderStatus: "503"},
			map[string]any{"error": map[string]any{"message": "upstream broke", "type": "t", "code": "unavailable"}})
	case "gap":
		s.reply(request, map[string]string{edge.HeaderStream: "chunk", edge.HeaderSeq: "0"}, chunk("one "))
		s.reply(request, map[string]string{edge.HeaderStream: "chunk", edge.HeaderSeq: "2"}, chunk("three"))
	case "reorder":
		s.reply(request, map[string]string{edge.HeaderStream: "chunk", edge.HeaderSeq: "1"}, chunk("two "))
	}
	// "silent": a broker that died with every attempt
}

// chat and read: the call's text, whole or streamed.
func readStream(t *testing.T, stream *edge.ChatStream) (string, error) {
	t.Helper()
	defer stream.Close()
	var text strings.Builder
	for stream.Next() {
		for _, choice := range stream.Current().Choices {
			text.WriteString(choice.Delta.Content)
		}
	}
	return text.String(), stream.Err()
}

func call(t *testing.T, c *edge.Client, subject, script, id string, stream bool) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]any{"model": "m", "stream": stream,
		"messages": []any{map[string]any{"role": "user", "content": script}}})
	if !stream {
		reply, err := c.Call(ctx, subject, body, edge.WithRequestID(id))
		if err != nil {
			return "", err
		}
		var whole edge.ChatCompletion
		if err := json.Unmarshal(reply.Data, &whole); err != nil {
			t.Fatal(err)
		}
		return whole.Choices[0].Message.Content, nil
	}
	s, err := streamOn(ctx, c, subject, body, id)
	if err != nil {
		return "", err
	}
	return readStream(t, s)
}

// streamOn streams a raw body from subject (the stand-in's, not llm.chat).
func streamOn(ctx context.Context, c *edge.Client, subject string, body []byte, id string) (*edge.ChatStream, error) {
	return c.StreamCall(ctx, subject, body, edge.WithRequestID(id))
}

func TestABodyOverMaxPayloadIsRefusedBeforeItIsPublished(t *testing.T) {
	s, subject := startStandIn(t)
	c := client(t, serverURL(t, "EDGE_BARE_NATS_URL"), edge.Options{})
	if got := c.Conn().MaxPayload(); got != bareMaxPayload {
		t.Fatalf("the bare server takes %d bytes", got)
	}
	big := strings.Repeat("x", 2*bareMaxPayload)
	ctx := context.Background()
	refused := func(what string, err error) {
		var failure *edge.APIError
		if !errors.As(err, &failure) || !errors.Is(err, edge.ErrBadRequest) {
			t.Fatalf("%s: %v, want a BadRequestError", what, err)
		}
		limit := fmt.Sprintf("takes %d (its max_payload, %d", bareMaxPayload-edge.HeaderRoom, bareMaxPayload)
		if failure.Status != 413 || failure.Code != "request_too_large" || !strings.Contains(failure.Message, limit) || failure.RequestID == "" {
			t.Errorf("%s: %+v", what, failure)
		}
	}
	_, err := c.Chat(ctx, hello("m", big))
	refused("chat", err)
	_, err = c.Stream(ctx, hello("m", big))
	refused("stream", err)
	_, err = c.Messages(ctx, edge.MessagesRequest{Model: "m", MaxTokens: 8, Messages: []edge.MessageParam{{Role: "user", Content: big}}})
	refused("messages", err)
	_, err = c.Call(ctx, subject, []byte(big))
	refused("call", err)
	if err := c.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := s.seen.total(); n != 0 {
		t.Errorf("%d requests were published", n)
	}
}

func TestKeepalivesAreNotTheAnswer(t *testing.T) {
	s, subject := startStandIn(t)
	c := client(t, serverURL(t, "EDGE_BARE_NATS_URL"), edge.Options{Retry: &fastRetry})
	for _, stream := range []bool{false, true} {
		id := fmt.Sprintf("think-%v", stream)
		text, err := call(t, c, subject, "think", id, stream)
		if err != nil || text != "thought it over" {
			t.Fatalf("stream=%v: %q, %v", stream, text, err)
		}
		sent := s.seen.requests(id)
		if len(sent) != 1 {
			t.Errorf("stream=%v: a slow call was sent %d times", stream, len(sent))
		}
		if got := sent[0].Header.Get(edge.HeaderKeepaliveMs); got != "250" { // a quarter of 600 ms, at least 250
			t.Errorf("stream=%v: Llm-Keepalive-Ms %q", stream, got)
		}
	}
}

func TestASilentAttemptIsSentAgainUnderItsIdAndLeftRunning(t *testing.T) {
	s, subject := startStandIn(t)
	c := client(t, serverURL(t, "EDGE_BARE_NATS_URL"), edge.Options{Retry: &fastRetry})
	for _, stream := range []bool{false, true} {
		id := fmt.Sprintf("lost-once-%v", stream)
		text, err := call(t, c, subject, "lost-once", id, stream)
		if err != nil || text != "second try" {
			t.Fatalf("stream=%v: %q, %v", stream, text, err)
		}
		sent := s.seen.requests(id)
		if len(sent) != 2 {
			t.Fatalf("stream=%v: %d attempts", stream, len(sent))
		}
		for _, attempt := range sent {
			if attempt.Header.Get(edge.HeaderIdempotent) != "1" {
				t.Errorf("stream=%v: an attempt without Llm-Idempotent: 1", stream)
			}
		}
		first, _ := timeoutMs(sent[0])
		second, _ := timeoutMs(sent[1])
		if second >= first || first > 20_000 {
			t.Errorf("stream=%v: Llm-Timeout-Ms %d then %d: what is left of the context's deadline", stream, first, second)
		}
		if cancels := s.seen.cancelsOf(id); len(cancels) != 0 {
			t.Errorf("stream=%v: the lost attempt was cancelled (%v): its retry may join it", stream, cancels)
		}
	}
}

func timeoutMs(msg *nats.Msg) (int, error) {
	var ms int
	_, err := fmt.Sscan(msg.Header.Get(edge.HeaderTimeoutMs), &ms)
	return ms, err
}

func TestA503BeforeTheFirstChunkIsTriedAgainButNotAfter(t *testing.T) {
	s, subject := startStandIn(t)
	c := client(t, serverURL(t, "EDGE_BARE_NATS_URL"), edge.Options{Retry: &fastRetry})
	for _, stream := range []bool{false, true} {
		id := fmt.Sprintf("busy-once-%v", stream)
		if text, err := call(t, c, subject, "busy-once", id, stream); err != nil || text != "second try" {
			t.Fatalf("stream=%v: %q, %v", stream, text, err)
		}
		if n := len(s.seen.requests(id)); n != 2 {
			t.Errorf("stream=%v: %d attempts", stream, n)
		}
	}
	text, err := call(t, c, subject, "fails-after-a-chunk", "after-a-chunk", true)
	if text != "one " || !errors.Is(err, edge.ErrUnavailable) {
		t.Errorf("a failure after a chunk is the caller's: %q, %v", text, err)
	}
	if n := len(s.seen.requests("after-a-chunk")); n != 1 {
		t.Errorf("a stream that began was sent %d times", n)
	}
}

func TestSilenceIsLostAfterTheAttempts(t *testing.T) {
	s, subject := startStandIn(t)
	c := client(t, serverURL(t, "EDGE_BARE_NATS_URL"), edge.Options{Retry: &fastRetry})
	_, err := call(t, c, subject, "silent", "silent", false)
	var failure *edge.APIError
	if !errors.As(err, &failure) || failure.Kind != edge.ErrDeadline || !strings.Contains(failure.Message, "no answer and no keepalive for 600ms") {
		t.Fatalf("%v", err)
	}
	if n := len(s.seen.requests("silent")); n != fastRetry.Attempts {
		t.Errorf("%d attempts", n)
	}
	// without retries a lost stream is nobody's: it is cancelled
	once := edge.RetryPolicy{Attempts: 1, AttemptTimeout: silence}
	alone := client(t, serverURL(t, "EDGE_BARE_NATS_URL"), edge.Options{Retry: &once})
	if _, err := call(t, alone, subject, "silent", "silent-alone", true); !errors.Is(err, edge.ErrDeadline) {
		t.Fatalf("%v", err)
	}
	sent := s.seen.requests("silent-alone")
	if len(sent) != 1 || sent[0].Header.Get(edge.HeaderIdempotent) != "" {
		t.Fatalf("one attempt, not marked idempotent: %d", len(sent))
	}
	s.seen.waitFor(t, "the lost stream's cancel", func() bool {
		cancels := s.seen.cancelsOf("silent-alone")
		return len(cancels) == 1 && cancels[0] == sent[0].Reply
	})
}

func TestAGapOrAReorderIsAStreamErrorAndCancelsTheStream(t *testing.T) {
	s, subject := startStandIn(t)
	c := client(t, serverURL(t, "EDGE_BARE_NATS_URL"), edge.Options{Retry: &fastRetry})
	text, err := call(t, c, subject, "gap", "gap", true)
	var broken *edge.StreamError
	if text != "one " || !errors.As(err, &broken) || !strings.Contains(broken.Message, "stream message 1 missing") {
		t.Fatalf("%q, %v", text, err)
	}
	if _, err := call(t, c, subject, "reorder", "reorder", true); !errors.Is(err, edge.ErrStream) {
		t.Fatalf("%v", err)
	}
	for _, id := range []string{"gap", "reorder"} {
		s.seen.waitFor(t, id+"'s cancel", func() bool {
			cancels := s.seen.cancelsOf(id)
			return len(cancels) == 1 && cancels[0] == s.seen.requests(id)[0].Reply
		})
	}
}

func TestTheContextsDeadlineIsSentAndEndsTheCall(t *testing.T) {
	s, subject := startStandIn(t)
	c := client(t, serverURL(t, "EDGE_BARE_NATS_URL"), edge.Options{Retry: &fastRetry})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	body := []byte(`{"model": "m", "messages": [{"role": "user", "content": "silent"}]}`)
	_, err := c.Call(ctx, subject, body, edge.WithRequestID("deadline"))
	var failure *edge.APIError
	if !errors.As(err, &failure) || failure.Kind != edge.ErrDeadline || failure.Code != "deadline_exceeded" || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v", err)
	}
	sent := s.seen.requests("deadline")
	if len(sent) != 1 {
		t.Fatalf("%d attempts within a deadline shorter than the silence bound", len(sent))
	}
	if ms, err := timeoutMs(sent[0]); err != nil || ms > 300 || ms < 1 {
		t.Errorf("Llm-Timeout-Ms %d: the context's deadline", ms)
	}
}

// serveFile answers llm.batch.file.content with content, five bytes a piece, under digest.
func serveFile(t *testing.T, s *standIn, content, digest string) {
	t.Helper()
	sub, err := s.nc.Subscribe(edge.SubjectBatchFileContent, func(request *nats.Msg) {
		var asked struct {
			Offset int `json:"offset"`
		}
		_ = json.Unmarshal(request.Data, &asked)
		end := asked.Offset + 5
		if end > len(content) {
			end = len(content)
		}
		msg := &nats.Msg{Subject: request.Reply, Header: nats.Header{}, Data: []byte(content[asked.Offset:end])}
		msg.Header.Set(edge.HeaderFileSize, fmt.Sprint(len(content)))
		msg.Header.Set(edge.HeaderFileOffset, fmt.Sprint(asked.Offset))
		msg.Header.Set(edge.HeaderFileDigest, digest)
		_ = s.nc.PublishMsg(msg)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestAFileIsReadPieceByPieceAndCheckedAgainstItsDigest(t *testing.T) {
	s, _ := startStandIn(t)
	c := client(t, serverURL(t, "EDGE_BARE_NATS_URL"), edge.Options{Retry: &fastRetry})
	content := `{"custom_id": "a"}` + "\n" + `{"custom_id": "b"}` + "\n"
	sum := sha256.Sum256([]byte(content))
	serveFile(t, s, content, "SHA-256="+base64.URLEncoding.EncodeToString(sum[:]))
	var read bytes.Buffer
	size, err := c.Batches.ReadFile(context.Background(), "file_1", &read)
	if err != nil || size != int64(len(content)) || read.String() != content {
		t.Fatalf("%d bytes, %v: %q", size, err, read.String())
	}
	results, err := c.Batches.Results(context.Background(), &edge.Batch{OutputFileID: "file_1"})
	if err != nil || len(results) != 2 || results[1].CustomID != "b" {
		t.Fatalf("%+v %v", results, err)
	}
}

func TestAFileWhoseBytesDoNotMatchItsDigestIsAStreamError(t *testing.T) {
	s, _ := startStandIn(t)
	c := client(t, serverURL(t, "EDGE_BARE_NATS_URL"), edge.Options{Retry: &fastRetry})
	other := sha256.Sum256([]byte("something else"))
	serveFile(t, s, "hello world\n", "SHA-256="+base64.URLEncoding.EncodeToString(other[:]))
	_, err := c.Batches.ReadFile(context.Background(), "file_2", io.Discard)
	var broken *edge.StreamError
	if !errors.As(err, &broken) || !strings.Contains(broken.Message, "do not match its digest") {
		t.Fatalf("%v", err)
	}
}
