package edge_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"llm-edge/edge"
)

// The status table of docs/asyncapi.json (x-client-errors), as the other clients read it.
func TestEachStatusHasTheClassOfTheContract(t *testing.T) {
	cases := map[int]edge.ErrorKind{
		400: edge.ErrBadRequest, 401: edge.ErrAuthentication, 402: edge.ErrBudgetExceeded,
		403: edge.ErrPermissionDenied, 404: edge.ErrNotFound, 408: edge.ErrDeadline,
		409: edge.ErrConflict, 413: edge.ErrBadRequest, 422: edge.ErrBadRequest,
		429: edge.ErrRateLimit, 431: edge.ErrBadRequest, 500: edge.ErrInternalServer,
		502: edge.ErrInternalServer, 503: edge.ErrUnavailable, 504: edge.ErrDeadline,
		418: edge.ErrAPI,
	}
	for status, kind := range cases {
		if got := edge.KindOf(status); got != kind {
			t.Errorf("status %d: %s, want %s", status, got, kind)
		}
	}
	if edge.ErrNotFound.Error() != "NotFoundError" || edge.ErrBudgetExceeded.Error() != "BudgetExceeded" {
		t.Errorf("kinds are named as the Python and TypeScript classes: %s, %s", edge.ErrNotFound, edge.ErrBudgetExceeded)
	}
}

func TestErrorsIsWalksTheTree(t *testing.T) {
	var err error = edge.FromReply(404, []byte(`{"error":{"message":"m","type":"t","code":"model_not_found"}}`), nil)
	for _, kind := range []edge.ErrorKind{edge.ErrNotFound, edge.ErrAPI, edge.ErrEdge} {
		if !errors.Is(err, kind) {
			t.Errorf("a 404 is %s", kind)
		}
	}
	for _, kind := range []edge.ErrorKind{edge.ErrBadRequest, edge.ErrStream} {
		if errors.Is(err, kind) {
			t.Errorf("a 404 is not %s", kind)
		}
	}
	var stream error = &edge.StreamError{Message: "gap"}
	if !errors.Is(stream, edge.ErrStream) || !errors.Is(stream, edge.ErrEdge) || errors.Is(stream, edge.ErrAPI) {
		t.Errorf("a StreamError is ErrStream and ErrEdge, not ErrAPI")
	}
}

func TestTheEnvelopeAndTheHeadersGiveTheContext(t *testing.T) {
	header := nats.Header{}
	header.Set(edge.HeaderRetryAfter, "2")
	header.Set(edge.HeaderRequestID, "r1")
	body := []byte(`{"error":{"type":"t","code":"rate_limited","message":"slow down","param":"p"}}`)
	err := edge.FromReply(429, body, header)
	want := edge.APIError{Kind: edge.ErrRateLimit, Status: 429, Code: "rate_limited", Message: "slow down",
		Param: "p", RequestID: "r1", RetryAfter: 2 * time.Second}
	if *err != want {
		t.Errorf("got %+v, want %+v", *err, want)
	}
	if err.Error() != "429 rate_limited: slow down (param p)" {
		t.Errorf("message %q", err.Error())
	}
	raw := edge.FromReply(502, []byte("not json"), nil)
	if raw.Kind != edge.ErrInternalServer || raw.Message != "not json" || raw.Code != "" {
		t.Errorf("a body that is no envelope is the message: %+v", raw)
	}
	anthropic := edge.FromReply(400, []byte(`{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}`), nil)
	if anthropic.Message != "bad" || anthropic.Kind != edge.ErrBadRequest {
		t.Errorf("an Anthropic error envelope: %+v", anthropic)
	}
}

func TestKeepalivesComeEveryQuarterOfTheSilenceBound(t *testing.T) {
	cases := map[time.Duration]time.Duration{
		30 * time.Second: 5 * time.Second, 8 * time.Second: 2 * time.Second,
		600 * time.Millisecond: 250 * time.Millisecond,
	}
	for silence, want := range cases {
		if got := edge.KeepaliveInterval(silence); got != want {
			t.Errorf("silence %v: keepalive every %v, want %v", silence, got, want)
		}
	}
}
