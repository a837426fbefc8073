package edge

import (
	"encoding/json"
	"testing"
)

func TestTheBodySaysWhetherItStreamsAndKeepsItsExtraFields(t *testing.T) {
	request := ChatRequest{
		Model: "m", Messages: []Message{{Role: "user", Content: "hi"}},
		StreamOptions: &StreamOptions{IncludeUsage: true}, Extra: map[string]any{"reasoning_effort": "high"},
	}
	for _, stream := range []bool{false, true} {
		body, err := encodeBody(request, request.Extra, stream)
		if err != nil {
			t.Fatal(err)
		}
		var fields map[string]any
		if err := json.Unmarshal(body, &fields); err != nil {
			t.Fatal(err)
		}
		if fields["stream"] != stream || fields["reasoning_effort"] != "high" || fields["model"] != "m" {
			t.Errorf("stream=%v: %s", stream, body)
		}
		if _, ok := fields["stream_options"]; ok != stream {
			t.Errorf("stream_options is sent with streams only: %s", body)
		}
	}
}
