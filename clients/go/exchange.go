package edge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// errLost: an attempt stayed silent (no answer, no keepalive) for the policy's AttemptTimeout
// before its answer began: the request or its reply was lost.
var errLost = errors.New("no answer and no keepalive")

// request is one call: its headers, its deadline and the account of its attempts.
type request struct {
	c        *Client
	ctx      context.Context
	stop     context.CancelFunc
	subject  string
	body     []byte
	header   nats.Header
	id       string
	deadline time.Time
	count    int
	// shared: the attempts share one upstream call (Llm-Idempotent), so a lost one is left
	// running for the next to join.
	shared bool
}

// newRequest refuses, before anything is published, a body the connected server would not
// take (a publish over its max_payload is an error of the connection, not an answer).
func (c *Client) newRequest(ctx context.Context, subject string, body []byte, opts []CallOption) (*request, error) {
	var o callOptions
	for _, opt := range opts {
		opt(&o)
	}
	id := o.requestID
	if id == "" {
		id = nuid.Next()
	}
	maxPayload := c.nc.MaxPayload()
	if limit := maxPayload - HeaderRoom; int64(len(body)) > limit {
		message := fmt.Sprintf("request body is %d bytes; the NATS server takes %d "+
			"(its max_payload, %d, less %d for headers)", len(body), limit, maxPayload, HeaderRoom)
		return nil, inferred(CodeRequestTooLarge, message, id, nil)
	}
	header := nats.Header{}
	header.Set(HeaderRequestID, id)
	optional := map[string]string{
		HeaderCacheControl:   o.cacheControl,
		HeaderCacheNamespace: o.namespace,
		HeaderTraceparent:    o.traceparent,
	}
	if c.opts.APIKey != "" {
		optional[HeaderAuthorization] = "Bearer " + c.opts.APIKey
	}
	if optional[HeaderCacheNamespace] == "" {
		optional[HeaderCacheNamespace] = c.opts.Namespace
	}
	for name, value := range optional {
		if value != "" {
			header.Set(name, value)
		}
	}
	if c.retry.AttemptTimeout > 0 {
		header.Set(HeaderKeepaliveMs, millis(KeepaliveInterval(c.retry.AttemptTimeout)))
	}
	r := &request{c: c, subject: subject, body: body, header: header, id: id}
	if c.retry.Attempts > 1 { // every attempt is answered from one upstream call
		header.Set(HeaderIdempotent, "1")
		r.shared = true
	}
	if deadline, ok := ctx.Deadline(); ok {
		r.deadline = deadline
	} else {
		r.deadline = time.Now().Add(c.opts.Deadline)
	}
	r.ctx, r.stop = context.WithDeadline(ctx, r.deadline)
	return r, nil
}

// send publishes an attempt with what is left of the deadline as its Llm-Timeout-Ms.
func (r *request) send() (*attempt, error) {
	r.count++
	remaining := time.Until(r.deadline)
	if remaining < time.Millisecond {
		remaining = time.Millisecond
	}
	r.header.Set(HeaderTimeoutMs, millis(remaining))
	nc := r.c.nc
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: r.subject, Reply: inbox, Header: r.header, Data: r.body}
	if err := nc.PublishMsg(msg); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return &attempt{nc: nc, sub: sub, inbox: inbox, id: r.id, silence: r.c.retry.AttemptTimeout}, nil
}

// backOff waits before the next attempt; it returns failure when none may follow (the
// policy's attempts are spent, or the wait would reach the deadline).
func (r *request) backOff(failure *APIError) error {
	wait := r.c.retry.wait(r.count, failure.RetryAfter)
	if r.count >= r.c.retry.Attempts || !time.Now().Add(wait).Before(r.deadline) {
		return failure
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-r.ctx.Done():
		return r.doneErr()
	}
}

// lost is the failure of an attempt that stayed silent.
func (r *request) lost() *APIError {
	message := fmt.Sprintf("no answer and no keepalive for %v: the request or its reply was lost",
		r.c.retry.AttemptTimeout)
	return inferred(CodeDeadlineExceeded, message, r.id, nil)
}

// doneErr is the error of a call whose context ended: an ErrDeadline wrapping
// context.DeadlineExceeded, or the context's cancellation.
func (r *request) doneErr() error {
	if errors.Is(r.ctx.Err(), context.DeadlineExceeded) {
		return inferred(CodeDeadlineExceeded, "no reply within the deadline", r.id, context.DeadlineExceeded)
	}
	return r.ctx.Err()
}

// cancelOnDone says whether a call whose context ended is cancelled upstream: always when its
// caller cancelled it; on its deadline only when no attempt may join it (the broker stops at
// the same deadline by itself).
func (r *request) cancelOnDone() bool {
	return errors.Is(r.ctx.Err(), context.Canceled) || !r.shared
}

// attempt is one publish of a request and the reply inbox it listens on.
type attempt struct {
	nc      *nats.Conn
	sub     *nats.Subscription
	inbox   string
	id      string
	silence time.Duration
	begun   bool
	mu      sync.Mutex
	closed  bool
}

// next returns the attempt's next message other than a keepalive. Before the answer begins it
// returns errLost after silence (keepalives restart the silence); after, only ctx bounds it.
func (a *attempt) next(ctx context.Context) (*nats.Msg, error) {
	quiet := time.Now().Add(a.silence)
	for {
		wait, release := ctx, context.CancelFunc(func() {})
		if !a.begun && a.silence > 0 {
			wait, release = context.WithDeadline(ctx, quiet)
		}
		msg, err := a.sub.NextMsgWithContext(wait)
		release()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return nil, errLost
			}
			return nil, err // nats.ErrNoResponders: nobody serves the subject
		}
		if msg.Header.Get(HeaderStream) == "keepalive" {
			if !a.begun { // slow, not lost
				quiet = time.Now().Add(a.silence)
			}
			continue
		}
		a.begun = true
		return msg, nil
	}
}

// close stops listening; cancel: publish the cancel upstream, with the attempt's inbox as its
// reply (which proves the request is ours to cancel). A second close does nothing.
func (a *attempt) close(cancel bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.closed = true
	_ = a.sub.Unsubscribe()
	if cancel && !a.nc.IsClosed() {
		_ = a.nc.PublishMsg(&nats.Msg{Subject: SubjectCancel, Reply: a.inbox, Data: []byte(a.id)})
	}
}

// statusOf is a message's Llm-Status (fallback when it has none).
func statusOf(msg *nats.Msg, fallback int) int {
	if status, err := strconv.Atoi(msg.Header.Get(HeaderStatus)); err == nil {
		return status
	}
	return fallback
}

func millis(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
