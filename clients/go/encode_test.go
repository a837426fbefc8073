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

func TestAVectorDecodesFloatsAndBase64Float32s(t *testing.T) {
	// 1.0 and -0.5 as little-endian float32s: 0000803f 000000bf
	for _, data := range []string{`[1, -0.5]`, `"AACAPwAAAL8="`} {
		var v Vector
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			t.Fatal(err)
		}
		if len(v) != 2 || v[0] != 1 || v[1] != -0.5 {
			t.Errorf("%s: %v", data, v)
		}
	}
	var v Vector
	if err := json.Unmarshal([]byte(`"AACAPwA="`), &v); err == nil {
		t.Errorf("5 bytes are no float32s: %v", v)
	}
}
