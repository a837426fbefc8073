package edge_test

import (
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"llm-edge/edge"
)

// serverURL is the URL the test harness passed (tests/integration/test_go_client.py runs these
// tests with a real stack and a bare server); without it the test is skipped.
func serverURL(t *testing.T, variable string) string {
	t.Helper()
	url := os.Getenv(variable)
	if url == "" {
		t.Skipf("%s is not set: tests/integration/test_go_client.py runs this test with a real stack", variable)
	}
	return url
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func client(t *testing.T, url string, opts edge.Options) *edge.Client {
	t.Helper()
	c, err := edge.Connect(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func hello(model, content string) edge.ChatRequest {
	return edge.ChatRequest{Model: model, Messages: []edge.Message{{Role: "user", Content: content}}}
}

// ask sends a request to the harness and decodes its JSON answer.
func ask(t *testing.T, nc *nats.Conn, subject string, body any) map[string]any {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(subject, data, 20*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var answer map[string]any
	if err := json.Unmarshal(msg.Data, &answer); err != nil {
		t.Fatal(err)
	}
	return answer
}

// recorder keeps what the stand-in broker received, and says when something came.
type recorder struct {
	mu      sync.Mutex
	byID    map[string][]*nats.Msg
	cancels map[string][]string // request id -> the reply subjects its cancels named
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{byID: map[string][]*nats.Msg{}, cancels: map[string][]string{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) request(msg *nats.Msg) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := msg.Header.Get(edge.HeaderRequestID)
	r.byID[id] = append(r.byID[id], msg)
	r.notify()
	return len(r.byID[id])
}

func (r *recorder) cancel(msg *nats.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancels[string(msg.Data)] = append(r.cancels[string(msg.Data)], msg.Reply)
	r.notify()
}

func (r *recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) requests(id string) []*nats.Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*nats.Msg(nil), r.byID[id]...)
}

func (r *recorder) cancelsOf(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.cancels[id]...)
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, msgs := range r.byID {
		n += len(msgs)
	}
	return n
}

// waitFor waits (10 s at most) until done holds, woken by each request or cancel received.
func (r *recorder) waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	limit := time.NewTimer(10 * time.Second)
	defer limit.Stop()
	for !done() {
		select {
		case <-r.changed:
		case <-limit.C:
			t.Fatalf("waited 10 s for %s", what)
		}
	}
}
