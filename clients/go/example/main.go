// The example of docs/clients.md (tests/integration/test_go_client.py runs it).
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"llm-edge/edge"
)

func main() {
	client, err := edge.Connect(os.Getenv("NATS_URL"), edge.Options{}) // "": nats://127.0.0.1:4222
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // the deadline
	defer cancel()

	hello := edge.ChatRequest{Model: "gpt-4o-mini", Messages: []edge.Message{{Role: "user", Content: "Hello"}}}
	reply, err := client.Chat(ctx, hello, edge.WithRequestID("order-42"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.Choices[0].Message.Content)

	stream, err := client.Stream(ctx, hello, edge.WithCacheControl("no-cache"))
	if err != nil {
		log.Fatal(err)
	}
	for stream.Next() { // cancelling ctx, or Close before the end, cancels it upstream
		for _, choice := range stream.Current().Choices {
			fmt.Print(choice.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		log.Fatal(err)
	}
	fmt.Println()

	_, err = client.Chat(ctx, edge.ChatRequest{Model: "no-such-model", Messages: hello.Messages})
	var failure *edge.APIError
	if errors.Is(err, edge.ErrNotFound) && errors.As(err, &failure) {
		fmt.Println(failure.Status, failure.Code)
	}

	line := edge.BatchLine{CustomID: "a", Method: "POST", URL: edge.ChatEndpoint, Body: hello}
	batch, err := client.Batches.Submit(ctx, edge.BatchSubmit{Lines: []edge.BatchLine{line}})
	if err != nil {
		log.Fatal(err)
	}
	done, err := client.Batches.Wait(ctx, batch.ID, func(b *edge.Batch) { fmt.Println(b.Status) })
	if err != nil {
		log.Fatal(err)
	}
	results, err := client.Batches.Results(ctx, done) // its output and error files' lines
	if err != nil {
		log.Fatal(err)
	}
	for _, result := range results {
		if result.Response != nil {
			fmt.Println(result.CustomID, result.Response.StatusCode)
		} else {
			fmt.Println(result.CustomID, result.Error.Message)
		}
	}
}
