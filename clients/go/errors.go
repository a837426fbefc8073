package edge

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrorKind names a class of the error tree that the Python and TypeScript clients share
// (docs/asyncapi.json, x-client-errors):
//
//	ErrEdge
//	 ├── ErrAPI                 *APIError: Status, Code, Message, Param, RequestID, RetryAfter
//	 │    ├── ErrBadRequest          400, 413, 422, 431
//	 │    ├── ErrAuthentication      401
//	 │    ├── ErrBudgetExceeded      402
//	 │    ├── ErrPermissionDenied    403
//	 │    ├── ErrNotFound            404
//	 │    ├── ErrConflict            409
//	 │    ├── ErrRateLimit           429
//	 │    ├── ErrInternalServer      500, 502 and other 5xx
//	 │    ├── ErrUnavailable         503
//	 │    └── ErrDeadline            408, 504, or no reply within the deadline
//	 └── ErrStream              *StreamError: a stream arrived out of order
//
// A kind is itself an error, for errors.Is: errors.Is(err, edge.ErrNotFound) holds for a 404,
// and errors.Is(err, edge.ErrAPI) for every *APIError. Its string is the class's name in the
// other clients (NotFoundError ...).
type ErrorKind string

// Error returns the class's name.
func (k ErrorKind) Error() string { return string(k) }

// Parent returns the class k is a case of ("" for ErrEdge, the root).
func (k ErrorKind) Parent() ErrorKind { return kindParent[k] }

// Under reports whether k is target or one of its cases.
func (k ErrorKind) Under(target ErrorKind) bool {
	for kind := k; kind != ""; kind = kindParent[kind] {
		if kind == target {
			return true
		}
	}
	return false
}

// KindOf returns the class of a failed reply's Llm-Status.
func KindOf(status int) ErrorKind {
	if kind, ok := kindByStatus[status]; ok {
		return kind
	}
	if status >= 500 {
		return kindFrom500
	}
	return kindOtherwise
}

// APIError is a failure the broker answered (or the client inferred), with its context.
type APIError struct {
	// Kind is the class of Status (KindOf).
	Kind ErrorKind
	// Status is the Llm-Status (HTTP-like).
	Status int
	// Code is the error envelope's machine-readable code (model_not_found ...), if any.
	Code string
	// Message is the envelope's message, for a person.
	Message string
	// Param is the request field at fault, if any.
	Param string
	// RequestID is the request's X-Request-Id.
	RequestID string
	// RetryAfter is how long the broker asked to wait before another try (0: it did not say).
	RetryAfter time.Duration
	cause      error
}

func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = "error"
	}
	text := fmt.Sprintf("%d %s: %s", e.Status, code, e.Message)
	if e.Param != "" {
		text += " (param " + e.Param + ")"
	}
	return text
}

// Is matches the error's kind and every class above it (ErrAPI, ErrEdge).
func (e *APIError) Is(target error) bool {
	kind, ok := target.(ErrorKind)
	return ok && e.Kind.Under(kind)
}

// Unwrap returns what caused an inferred error (context.DeadlineExceeded for a deadline that
// ran out), or nil.
func (e *APIError) Unwrap() error { return e.cause }

// StreamError says a stream's messages arrived out of order or incomplete.
type StreamError struct {
	Message   string
	RequestID string
}

func (e *StreamError) Error() string { return "stream error: " + e.Message }

// Is matches ErrStream and ErrEdge.
func (e *StreamError) Is(target error) bool {
	kind, ok := target.(ErrorKind)
	return ok && ErrStream.Under(kind)
}

type envelope struct {
	Error *struct {
		Message string  `json:"message"`
		Code    *string `json:"code"`
		Param   *string `json:"param"`
	} `json:"error"`
}

// FromReply is the one place a failed reply becomes an error: its kind from the status, its
// context from the error envelope (OpenAI's, or Anthropic's {"type": "error", "error": {...}})
// and the reply's headers.
func FromReply(status int, body []byte, header nats.Header) *APIError {
	failure := &APIError{Kind: KindOf(status), Status: status, Message: prefix(body, 200)}
	var parsed envelope
	if json.Unmarshal(body, &parsed) == nil && parsed.Error != nil {
		failure.Message = parsed.Error.Message
		if parsed.Error.Code != nil {
			failure.Code = *parsed.Error.Code
		}
		if parsed.Error.Param != nil {
			failure.Param = *parsed.Error.Param
		}
	}
	failure.RequestID = header.Get(HeaderRequestID)
	if seconds, err := strconv.ParseFloat(header.Get(HeaderRetryAfter), 64); err == nil && seconds >= 0 {
		failure.RetryAfter = time.Duration(seconds * float64(time.Second))
	}
	return failure
}

// inferred is an error the client infers without a reply; its status goes with its code.
func inferred(code, message, requestID string, cause error) *APIError {
	status := inferredStatus[code]
	return &APIError{
		Kind: KindOf(status), Status: status, Code: code, Message: message,
		RequestID: requestID, cause: cause,
	}
}

func prefix(body []byte, n int) string {
	if len(body) > n {
		body = body[:n]
	}
	return string(body)
}
