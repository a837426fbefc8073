// Package edge is a typed client of the LLM Edge Broker's NATS API, for Go producers: chat
// completions whole or streamed, the Anthropic Messages API, embeddings, the OpenAI Responses
// API (whole, streamed, and stored responses read, listed, cancelled and deleted), the model
// list and batches.
//
//	client, err := edge.Connect("nats://127.0.0.1:4222", edge.Options{})
//	if err != nil { ... }
//	defer client.Close()
//	hello := edge.ChatRequest{Model: "gpt-4o-mini",
//		Messages: []edge.Message{{Role: "user", Content: "Hello"}}}
//	reply, err := client.Chat(ctx, hello)
//
// Every call takes its deadline from its context (else Options.Deadline, 600 s); it is sent
// as Llm-Timeout-Ms and bounds the call's retries. Slow is not lost: every call asks its
// broker for keepalives (Llm-Keepalive-Ms, a quarter of the policy's AttemptTimeout, at most
// 5 s), so a slow answer is waited for up to the deadline; only an attempt silent for
// AttemptTimeout (no answer, no keepalive), NATS no-responders or a 503 is sent again, under
// the same X-Request-Id and marked Llm-Idempotent: 1: every attempt is answered from one
// upstream call, whichever broker it reaches. A stream is tried again so only before its
// first chunk. A body over the server's max_payload (less HeaderRoom) is refused before it is
// published (413). Failures are *APIError (errors.Is(err, edge.ErrNotFound) ...) or
// *StreamError; the error tree, its status table and the header names are generated from
// docs/asyncapi.json into contract.go.
package edge
