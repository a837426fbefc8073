package edge

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
)

// EmbeddingsRequest is an OpenAI embeddings request (the payload of llm.embeddings). Input is
// a text, a list of texts, one token array ([]int) or a list of token arrays; Extra carries
// any other field as is (a provider's own, such as input_type).
type EmbeddingsRequest struct {
	Model string `json:"model"`
	Input any    `json:"input"`
	// EncodingFormat is "float" (the default) or "base64"; either way Vector holds floats.
	EncodingFormat string         `json:"encoding_format,omitempty"`
	Dimensions     *int           `json:"dimensions,omitempty"`
	User           string         `json:"user,omitempty"`
	Extra          map[string]any `json:"-"`
}

// EmbeddingList is the answer of llm.embeddings: one embedding per input, in input order.
type EmbeddingList struct {
	Object string         `json:"object"`
	Data   []Embedding    `json:"data"`
	Model  string         `json:"model"`
	Usage  EmbeddingUsage `json:"usage"`
}

// Embedding is one input's vector.
type Embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding Vector `json:"embedding"`
}

// EmbeddingUsage is the tokens of the inputs (embeddings have no completion).
type EmbeddingUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// Vector is an embedding's components. It decodes both of the wire's forms: an array of
// floats, and (encoding_format "base64") the little-endian float32 bytes in base64, which is a
// quarter of the size on the wire.
type Vector []float64

// UnmarshalJSON reads an array of floats or a base64 string of float32s.
func (v *Vector) UnmarshalJSON(data []byte) error {
	if len(data) == 0 || data[0] != '"' {
		var floats []float64
		if err := json.Unmarshal(data, &floats); err != nil {
			return err
		}
		*v = floats
		return nil
	}
	var text string
	if err := json.Unmarshal(data, &text); err != nil {
		return err
	}
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return fmt.Errorf("a base64 embedding: %w", err)
	}
	if len(raw)%4 != 0 {
		return fmt.Errorf("a base64 embedding of %d bytes is not float32s", len(raw))
	}
	floats := make([]float64, len(raw)/4)
	for i := range floats {
		floats[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
	}
	*v = floats
	return nil
}

// Embeddings returns an OpenAI embeddings list (llm.embeddings), tried as Chat is. Each input
// is cached on its own, so inputs embedded before are not sent upstream again (the reply's
// Llm-Cached-Inputs header counts them).
func (c *Client) Embeddings(ctx context.Context, request EmbeddingsRequest, opts ...CallOption) (*EmbeddingList, error) {
	body, err := encodeFields(request, request.Extra)
	if err != nil {
		return nil, err
	}
	reply, err := c.Call(ctx, c.subject(SubjectEmbeddings, SubjectTenantEmbeddings), body, opts...)
	if err != nil {
		return nil, err
	}
	var list EmbeddingList
	return &list, json.Unmarshal(reply.Data, &list)
}
