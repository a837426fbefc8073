package edge

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ChatEndpoint is the endpoint batch lines target unless told otherwise.
const ChatEndpoint = "/v1/chat/completions"

// EmbeddingsEndpoint is the other endpoint brokers run batch lines of: each line's
// embeddings list.
const EmbeddingsEndpoint = "/v1/embeddings"

// EventGap is how long Wait listens for a batch event before it reads the batch again.
const EventGap = 5 * time.Second

// BatchLine is one request of a batch.
type BatchLine struct {
	CustomID string `json:"custom_id"`
	Method   string `json:"method"`
	URL      string `json:"url"`
	Body     any    `json:"body"`
}

// BatchSubmit creates a batch from inline lines (or an uploaded file's id).
type BatchSubmit struct {
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Lines            []BatchLine       `json:"lines,omitempty"`
	InputFileID      string            `json:"input_file_id,omitempty"`
	Metadata         map[string]string `json:"metadata,omitempty"`
}

// Batch is the batch object of the OpenAI Batch API.
type Batch struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	CreatedAt        int64             `json:"created_at"`
	ExpiresAt        *int64            `json:"expires_at,omitempty"`
	OutputFileID     string            `json:"output_file_id,omitempty"`
	ErrorFileID      string            `json:"error_file_id,omitempty"`
	InProgressAt     *int64            `json:"in_progress_at,omitempty"`
	CompletedAt      *int64            `json:"completed_at,omitempty"`
	FailedAt         *int64            `json:"failed_at,omitempty"`
	CancellingAt     *int64            `json:"cancelling_at,omitempty"`
	CancelledAt      *int64            `json:"cancelled_at,omitempty"`
	RequestCounts    RequestCounts     `json:"request_counts"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	Errors           *struct {
		Data []BatchError `json:"data"`
	} `json:"errors,omitempty"`
}

// Final reports whether the batch's status is one it never leaves.
func (b *Batch) Final() bool {
	switch b.Status {
	case "completed", "failed", "expired", "cancelled":
		return true
	}
	return false
}

// RequestCounts counts a batch's lines.
type RequestCounts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// BatchError is one validation error of a batch.
type BatchError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	Line    *int   `json:"line,omitempty"`
}

// BatchList is a page of the caller's batches, newest first.
type BatchList struct {
	Data    []Batch `json:"data"`
	HasMore bool    `json:"has_more"`
	FirstID string  `json:"first_id"`
	LastID  string  `json:"last_id"`
}

// Batches is the Batch API (llm.batch.*) of a client, and the batch files
// (llm.batch.file.*).
type Batches struct {
	c      *Client
	mu     sync.Mutex
	tenant string
}

// Tenant returns the tenant the brokers take this client for (llm.batch.whoami, asked once):
// a batch's events are published under it.
func (b *Batches) Tenant(ctx context.Context, opts ...CallOption) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tenant == "" {
		var who struct {
			Tenant string `json:"tenant"`
		}
		if err := b.op(ctx, SubjectBatchWhoami, struct{}{}, &who, opts); err != nil {
			return "", err
		}
		b.tenant = who.Tenant
	}
	return b.tenant, nil
}

func (b *Batches) op(ctx context.Context, subject string, body any, out any, opts []CallOption) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	reply, err := b.c.Call(ctx, subject, data, opts...)
	if err != nil {
		return err
	}
	return json.Unmarshal(reply.Data, out)
}

// Submit creates a batch from inline lines (llm.batch.submit); Endpoint and CompletionWindow
// default to ChatEndpoint and 24h.
func (b *Batches) Submit(ctx context.Context, submit BatchSubmit, opts ...CallOption) (*Batch, error) {
	if submit.Endpoint == "" {
		submit.Endpoint = ChatEndpoint
	}
	if submit.CompletionWindow == "" {
		submit.CompletionWindow = "24h"
	}
	var batch Batch
	return &batch, b.op(ctx, SubjectBatchSubmit, submit, &batch, opts)
}

// Get returns the batch as it is now.
func (b *Batches) Get(ctx context.Context, id string, opts ...CallOption) (*Batch, error) {
	var batch Batch
	return &batch, b.op(ctx, SubjectBatchGet, map[string]string{"id": id}, &batch, opts)
}

// Cancel stops the batch: queued lines are dropped, it ends cancelled (a final batch: 409,
// ErrConflict).
func (b *Batches) Cancel(ctx context.Context, id string, opts ...CallOption) (*Batch, error) {
	var batch Batch
	return &batch, b.op(ctx, SubjectBatchCancel, map[string]string{"id": id}, &batch, opts)
}

// List returns a page of the caller's batches, newest first: at most limit (0: the broker's
// default, 20), after the batch id after ("" for the first page).
func (b *Batches) List(ctx context.Context, limit int, after string, opts ...CallOption) (*BatchList, error) {
	query := map[string]any{}
	if limit > 0 {
		query["limit"] = limit
	}
	if after != "" {
		query["after"] = after
	}
	var list BatchList
	return &list, b.op(ctx, SubjectBatchList, query, &list, opts)
}

// Wait returns the batch once it is final, calling onProgress (if not nil) with every state
// seen. It subscribes to llm.batch.events.<tenant>.<id> before it reads the batch, so no
// change falls between the two, and reads it again whenever EventGap passes without an event.
func (b *Batches) Wait(ctx context.Context, id string, onProgress func(*Batch)) (*Batch, error) {
	tenant, err := b.Tenant(ctx)
	if err != nil {
		return nil, err
	}
	subject := strings.NewReplacer("{tenant}", tenant, "{batch_id}", id).Replace(SubjectBatchEvents)
	events := make(chan *nats.Msg, 64)
	sub, err := b.c.nc.ChanSubscribe(subject, events)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	batch, err := b.Get(ctx, id)
	for err == nil {
		if onProgress != nil {
			onProgress(batch)
		}
		if batch.Final() {
			return batch, nil
		}
		gap := time.NewTimer(EventGap)
		select {
		case msg := <-events:
			next := &Batch{}
			if err = json.Unmarshal(msg.Data, next); err == nil {
				batch = next
			}
		case <-gap.C:
			batch, err = b.Get(ctx, id)
		case <-ctx.Done():
			err = ctx.Err()
		}
		gap.Stop()
	}
	return nil, err
}
