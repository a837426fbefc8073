package edge

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultDeadline is a call's time budget when its context has no deadline: the openai SDK's
// (minutes to a reasoning model's first token are normal; keepalives tell slow from lost).
const DefaultDeadline = 600 * time.Second

// MaxKeepalive and MinKeepalive bound the keepalive interval a call asks its broker for.
const (
	MaxKeepalive = 5 * time.Second
	MinKeepalive = 250 * time.Millisecond
)

// MaxRetryAfter is the longest Retry-After waited for between attempts.
const MaxRetryAfter = 10 * time.Second

// RetryPolicy says how a call is tried again within its deadline.
type RetryPolicy struct {
	// Attempts is the tries in all (1: no retry, and no Llm-Idempotent mark).
	Attempts int
	// AttemptTimeout is the longest silence (no answer, no keepalive) before an attempt's
	// answer begins after which it is taken for lost (0: only the deadline).
	AttemptTimeout time.Duration
	// Backoff is the first wait between attempts, doubled each time, with full jitter.
	Backoff time.Duration
	// MaxBackoff is the longest wait (a reply's Retry-After may ask for more, up to
	// MaxRetryAfter).
	MaxBackoff time.Duration
}

// DefaultRetry is the Python and TypeScript clients' policy.
var DefaultRetry = RetryPolicy{
	Attempts:       4,
	AttemptTimeout: 30 * time.Second,
	Backoff:        250 * time.Millisecond,
	MaxBackoff:     2 * time.Second,
}

// wait is how long to wait before attempt number attempt+1.
func (p RetryPolicy) wait(attempt int, retryAfter time.Duration) time.Duration {
	ceiling := float64(p.Backoff) * math.Pow(2, float64(attempt-1))
	if ceiling > float64(p.MaxBackoff) {
		ceiling = float64(p.MaxBackoff)
	}
	wait := time.Duration(rand.Float64() * ceiling) //nolint:gosec // jitter, not a secret
	if retryAfter > MaxRetryAfter {
		retryAfter = MaxRetryAfter
	}
	if retryAfter > wait {
		wait = retryAfter
	}
	return wait
}

// KeepaliveInterval is the keepalive interval asked for by a caller that takes silence for
// lost: a quarter of it, between MinKeepalive and MaxKeepalive, so a live call sends several
// before its caller would give up on it.
func KeepaliveInterval(silence time.Duration) time.Duration {
	interval := silence / 4
	if interval > MaxKeepalive {
		interval = MaxKeepalive
	}
	if interval < MinKeepalive {
		interval = MinKeepalive
	}
	return interval
}

// Options configure a Client; the zero value is usable.
type Options struct {
	// APIKey is the tenant's key, sent as Authorization: Bearer <key>.
	APIKey string
	// Tenant publishes on the tenant's own subjects (llm.tenant.<tenant>.chat) instead; the
	// NATS server's permissions then say who the caller is.
	Tenant string
	// Namespace is the cache namespace of every call (a call may name its own).
	Namespace string
	// Deadline is every call's time budget when its context has none (DefaultDeadline).
	Deadline time.Duration
	// Retry says how calls are tried again (nil: DefaultRetry).
	Retry *RetryPolicy
}

// Client is a typed client of the broker's NATS API: chat, streams, Anthropic messages,
// embeddings, Responses, models and batches. It is safe for concurrent use.
type Client struct {
	nc      *nats.Conn
	opts    Options
	retry   RetryPolicy
	owned   bool
	Batches *Batches
}

// New returns a client on the caller's connection (Close leaves it open).
func New(nc *nats.Conn, opts Options) *Client {
	c := &Client{nc: nc, opts: opts, retry: DefaultRetry}
	if opts.Retry != nil {
		c.retry = *opts.Retry
	}
	if c.retry.Attempts < 1 {
		c.retry.Attempts = 1
	}
	if c.opts.Deadline <= 0 {
		c.opts.Deadline = DefaultDeadline
	}
	c.Batches = &Batches{c: c}
	return c
}

// Connect opens a NATS connection of the client's own (closed by Close).
func Connect(url string, opts Options, natsOptions ...nats.Option) (*Client, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("edge-client-go")}, natsOptions...)...)
	if err != nil {
		return nil, err
	}
	c := New(nc, opts)
	c.owned = true
	return c, nil
}

// Conn returns the client's NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Close drains and closes the connection if the client opened it.
func (c *Client) Close() error {
	if c.owned && !c.nc.IsClosed() {
		return c.nc.Drain()
	}
	return nil
}

// CallOption sets a per-call option.
type CallOption func(*callOptions)

type callOptions struct {
	requestID, cacheControl, namespace, traceparent string
}

// WithRequestID names the call's X-Request-Id (every attempt carries it; generated when not
// named).
func WithRequestID(id string) CallOption { return func(o *callOptions) { o.requestID = id } }

// WithCacheControl sends Cache-Control: no-cache, no-store or max-age=N.
func WithCacheControl(value string) CallOption {
	return func(o *callOptions) { o.cacheControl = value }
}

// WithNamespace names the call's cache namespace.
func WithNamespace(name string) CallOption { return func(o *callOptions) { o.namespace = name } }

// WithTraceparent passes a W3C trace context.
func WithTraceparent(value string) CallOption {
	return func(o *callOptions) { o.traceparent = value }
}

// Chat returns a whole chat completion (llm.chat). The call's deadline is its context's (else
// the client's); it is sent as Llm-Timeout-Ms and bounds the retries.
func (c *Client) Chat(ctx context.Context, request ChatRequest, opts ...CallOption) (*ChatCompletion, error) {
	body, err := encodeBody(request, request.Extra, false)
	if err != nil {
		return nil, err
	}
	reply, err := c.Call(ctx, c.subject(SubjectChat, SubjectTenantChat), body, opts...)
	if err != nil {
		return nil, err
	}
	var completion ChatCompletion
	return &completion, json.Unmarshal(reply.Data, &completion)
}

// Messages returns a whole Anthropic Messages answer (llm.messages), tried as Chat is.
func (c *Client) Messages(ctx context.Context, request MessagesRequest, opts ...CallOption) (*AnthropicMessage, error) {
	body, err := encodeBody(request, request.Extra, false)
	if err != nil {
		return nil, err
	}
	reply, err := c.Call(ctx, c.subject(SubjectMessages, SubjectTenantMessages), body, opts...)
	if err != nil {
		return nil, err
	}
	var message AnthropicMessage
	return &message, json.Unmarshal(reply.Data, &message)
}

// Models returns the models the brokers serve (names and aliases).
func (c *Client) Models(ctx context.Context, opts ...CallOption) ([]Model, error) {
	reply, err := c.Call(ctx, SubjectModels, nil, opts...)
	if err != nil {
		return nil, err
	}
	var list struct {
		Data []Model `json:"data"`
	}
	return list.Data, json.Unmarshal(reply.Data, &list)
}

// Stream starts a streamed chat completion: iterate it with Next; cancelling ctx or Close
// cancels it upstream. A stream that fails before its first chunk (no broker, a silent
// attempt, a 503) is tried again under the same request id; once a chunk came it never is.
func (c *Client) Stream(ctx context.Context, request ChatRequest, opts ...CallOption) (*ChatStream, error) {
	body, err := encodeBody(request, request.Extra, true)
	if err != nil {
		return nil, err
	}
	return startStream(c, ctx, c.subject(SubjectChat, SubjectTenantChat), body, opts, decodeChunk)
}

// StreamMessages starts an Anthropic Messages stream: one MessageEvent per Anthropic event,
// tried and cancelled as Stream is.
func (c *Client) StreamMessages(ctx context.Context, request MessagesRequest, opts ...CallOption) (*MessageStream, error) {
	body, err := encodeBody(request, request.Extra, true)
	if err != nil {
		return nil, err
	}
	return startStream(c, ctx, c.subject(SubjectMessages, SubjectTenantMessages), body, opts, decodeEvent)
}

// StreamCall streams a JSON chat request body (its "stream" set) from any subject, as Stream
// does from llm.chat.
func (c *Client) StreamCall(ctx context.Context, subject string, body []byte, opts ...CallOption) (*ChatStream, error) {
	return startStream(c, ctx, subject, body, opts, decodeChunk)
}

// Cancel publishes a cancel for a request you sent yourself: its id on llm.cancel, with the
// request's reply subject as the cancel's reply (brokers honour a cancel only from the
// request's own inbox).
func (c *Client) Cancel(requestID, replySubject string) error {
	return c.nc.PublishMsg(&nats.Msg{Subject: SubjectCancel, Reply: replySubject, Data: []byte(requestID)})
}

// Call is request/reply with retries within the deadline; a failed reply is an *APIError.
//
// An attempt is sent again only when it is lost: nobody serves the subject, a 503, or no
// message at all (neither the answer nor a keepalive of the broker working on it) for the
// policy's AttemptTimeout. A slow answer is waited for, and a lost attempt is left running:
// the retry, under the same request id and marked Llm-Idempotent: 1, is answered from its
// upstream call. It returns the successful reply (Llm-Status under 400).
func (c *Client) Call(ctx context.Context, subject string, body []byte, opts ...CallOption) (*nats.Msg, error) {
	r, err := c.newRequest(ctx, subject, body, opts)
	if err != nil {
		return nil, err
	}
	defer r.stop()
	for {
		att, err := r.send()
		if err != nil {
			return nil, err
		}
		msg, err := att.next(r.ctx)
		var failure *APIError
		switch {
		case err == errLost:
			att.close(false) // left running: the next attempt is answered from its call
			failure = r.lost()
		case err != nil && r.ctx.Err() != nil:
			att.close(r.cancelOnDone())
			return nil, r.doneErr()
		case errors.Is(err, nats.ErrNoResponders):
			att.close(false)
			failure = inferred(CodeNoBroker, "nobody serves "+subject, r.id, nil)
		case err != nil:
			att.close(false)
			return nil, err
		default:
			att.close(false)
			status := statusOf(msg, 200)
			if status < 400 {
				return msg, nil
			}
			if failure = FromReply(status, msg.Data, msg.Header); status != 503 {
				return nil, failure
			}
		}
		if err := r.backOff(failure); err != nil {
			return nil, err
		}
	}
}

func (c *Client) subject(plain, tenant string) string {
	if c.opts.Tenant == "" {
		return plain
	}
	return strings.Replace(tenant, "{tenant}", c.opts.Tenant, 1)
}
