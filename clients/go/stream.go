package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
)

// Stream is a streamed call in progress: its items (chunks, or Anthropic events), read with
// Next and Current as bufio.Scanner reads lines:
//
//	stream, err := client.Stream(ctx, request)
//	if err != nil { ... }
//	defer stream.Close()
//	for stream.Next() {
//		fmt.Print(stream.Current().Choices[0].Delta.Content)
//	}
//	if err := stream.Err(); err != nil { ... }
//
// Cancelling the stream's context, or Close before its end, publishes its request id on
// llm.cancel with the stream's reply inbox as the cancel's reply: the broker stops the worker
// and the worker closes its upstream call. A stream read to its end sends no cancel.
type Stream[T any] struct {
	core    *streamCore
	decode  func(*nats.Msg, *StreamEnd) (T, bool, error)
	current T
	err     error
	end     *StreamEnd
}

// ChatStream is a streamed chat completion.
type ChatStream = Stream[ChatCompletionChunk]

// MessageStream is a streamed Anthropic Messages answer.
type MessageStream = Stream[MessageEvent]

// Next waits for the next item and reports whether there is one; false at the end of the
// stream, on a failure (Err) or when the context is done.
func (s *Stream[T]) Next() bool {
	for s.err == nil {
		msg, err := s.core.message()
		if err != nil {
			s.err = err
			return false
		}
		if msg == nil {
			return false
		}
		end := StreamEnd{}
		item, yield, err := s.decode(msg, &end)
		if err != nil {
			s.err = err
			s.core.finish(true)
			return false
		}
		if msg.Header.Get(HeaderStream) == "end" {
			s.end = &end
		}
		if yield {
			s.current = item
			return true
		}
	}
	return false
}

// Current returns the item Next found.
func (s *Stream[T]) Current() T { return s.current }

// Err returns what ended the stream early: an *APIError (ErrDeadline for a deadline that ran
// out), a *StreamError, context.Canceled, or nil.
func (s *Stream[T]) Err() error { return s.err }

// End returns the Llm-Stream: end totals once the stream finished (nil before).
func (s *Stream[T]) End() *StreamEnd { return s.end }

// RequestID returns the X-Request-Id every attempt of the stream carries.
func (s *Stream[T]) RequestID() string { return s.core.r.id }

// Close stops the stream: it is cancelled upstream unless it already ended.
func (s *Stream[T]) Close() error {
	s.core.finish(true)
	return nil
}

func startStream[T any](c *Client, ctx context.Context, subject string, body []byte,
	opts []CallOption, decode func(*nats.Msg, *StreamEnd) (T, bool, error)) (*Stream[T], error) {
	r, err := c.newRequest(ctx, subject, body, opts)
	if err != nil {
		return nil, err
	}
	core := &streamCore{r: r, quit: make(chan struct{})}
	if core.att, err = r.send(); err != nil {
		r.stop()
		return nil, err
	}
	go core.watch()
	return &Stream[T]{core: core, decode: decode}, nil
}

func decodeChunk(msg *nats.Msg, end *StreamEnd) (ChatCompletionChunk, bool, error) {
	var chunk ChatCompletionChunk
	if msg.Header.Get(HeaderStream) == "end" {
		if len(msg.Data) > 0 {
			return chunk, false, json.Unmarshal(msg.Data, end)
		}
		return chunk, false, nil
	}
	return chunk, true, json.Unmarshal(msg.Data, &chunk)
}

func decodeEvent(msg *nats.Msg, _ *StreamEnd) (MessageEvent, bool, error) {
	if msg.Header.Get(HeaderStream) != "chunk" || len(msg.Data) == 0 {
		return MessageEvent{}, false, nil
	}
	data := append(json.RawMessage(nil), msg.Data...)
	return MessageEvent{Event: msg.Header.Get(HeaderEvent), Data: data}, true, nil
}

// streamCore reads a stream's messages over its attempts.
type streamCore struct {
	r        *request
	mu       sync.Mutex
	att      *attempt // the attempt listened to (nil between attempts and after the end)
	over     bool     // the end came, or the stream failed or was closed
	started  bool     // a chunk came: never tried again
	expected int      // the Llm-Seq of the next message
	quit     chan struct{}
	quitOnce sync.Once
}

// watch cancels the stream upstream as soon as its context is done, even while nobody waits
// in Next.
func (s *streamCore) watch() {
	select {
	case <-s.r.ctx.Done():
		s.mu.Lock()
		if s.att != nil && !s.over {
			s.att.close(s.r.cancelOnDone())
		}
		s.mu.Unlock()
	case <-s.quit:
	}
}

// message returns the stream's next chunk or end message (nil after the end). Attempts that
// fail before the first chunk are tried again within the deadline.
func (s *streamCore) message() (*nats.Msg, error) {
	for {
		att, err := s.attempt()
		if att == nil || err != nil {
			return nil, err
		}
		msg, err := att.next(s.r.ctx)
		var failure *APIError
		switch {
		case err == errLost:
			s.drop(!s.r.shared) // a shared attempt is left for the next to join
			failure = s.r.lost()
		case err != nil && s.r.ctx.Err() != nil:
			s.finish(s.r.cancelOnDone())
			return nil, s.r.doneErr()
		case errors.Is(err, nats.ErrNoResponders):
			s.drop(false)
			failure = inferred(CodeNoBroker, "nobody serves "+s.r.subject, s.r.id, nil)
		case err != nil:
			s.finish(false)
			return nil, err
		default:
			kind := msg.Header.Get(HeaderStream)
			if kind == "chunk" || kind == "end" {
				return s.accept(msg, kind)
			}
			// an error during the stream, or the request refused before it began
			status := statusOf(msg, 500)
			failure = FromReply(status, msg.Data, msg.Header)
			if s.started || status != 503 {
				s.finish(false)
				return nil, failure
			}
			s.drop(false)
		}
		if err := s.r.backOff(failure); err != nil {
			s.finish(false)
			return nil, err
		}
	}
}

// accept checks a chunk's or the end's Llm-Seq (0, 1, 2 ...): a gap or a reorder is a
// StreamError, and the stream is cancelled.
func (s *streamCore) accept(msg *nats.Msg, kind string) (*nats.Msg, error) {
	if seq := msg.Header.Get(HeaderSeq); seq != "" && seq != strconv.Itoa(s.expected) {
		s.finish(true)
		text := fmt.Sprintf("stream message %d missing (got %s)", s.expected, seq)
		if got, err := strconv.Atoi(seq); err == nil && got < s.expected {
			text = fmt.Sprintf("stream message %d came again or out of order (expected %d)", got, s.expected)
		}
		return nil, &StreamError{Message: text, RequestID: s.r.id}
	}
	s.expected++
	s.started = true
	if kind == "end" {
		s.finish(false)
	}
	return msg, nil
}

// attempt is the attempt to listen to: the current one, or a new one (nil after the end).
func (s *streamCore) attempt() (*attempt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.over {
		return nil, nil
	}
	if s.att == nil {
		att, err := s.r.send()
		if err != nil {
			s.over = true
			return nil, err
		}
		s.att = att
	}
	return s.att, nil
}

// drop gives up the current attempt (cancel: cancel it upstream).
func (s *streamCore) drop(cancel bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.att != nil {
		s.att.close(cancel)
		s.att = nil
	}
}

// finish ends the stream (cancel: cancel it upstream unless it had ended).
func (s *streamCore) finish(cancel bool) {
	s.mu.Lock()
	if s.att != nil {
		s.att.close(cancel && !s.over)
		s.att = nil
	}
	s.over = true
	s.mu.Unlock()
	s.quitOnce.Do(func() { close(s.quit) })
	s.r.stop()
}
