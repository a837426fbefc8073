package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// PieceBytes is the piece of a file asked for at a time: what a broker sends at most (less on
// a server of smaller messages).
const PieceBytes = 4 * 1024 * 1024

// File is a file object of the Files API (a batch's input, output or error file).
type File struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
}

// BatchResult is one line of a batch's output or error file.
type BatchResult struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type fileRequest struct {
	ID     string `json:"id"`
	Offset int64  `json:"offset,omitempty"`
	Length int64  `json:"length,omitempty"`
}

// File returns a file's object (llm.batch.file.get); ErrNotFound for another tenant's file.
func (b *Batches) File(ctx context.Context, id string, opts ...CallOption) (*File, error) {
	var file File
	return &file, b.op(ctx, SubjectBatchFileGet, fileRequest{ID: id}, &file, opts)
}

// ReadFile writes a file's bytes into w, read piece by piece with llm.batch.file.content
// (each piece one call, tried again as any call), and checks them against the file's digest:
// the file comes whole and byte-identical, or a *StreamError says how it did not. It returns
// the file's size.
func (b *Batches) ReadFile(ctx context.Context, id string, w io.Writer, opts ...CallOption) (int64, error) {
	length := int64(PieceBytes)
	if fits := b.c.nc.MaxPayload() - HeaderRoom; fits < length {
		length = fits
	}
	hasher := sha256.New()
	offset, size, digest := int64(0), int64(-1), ""
	for offset != size {
		body, err := json.Marshal(fileRequest{ID: id, Offset: offset, Length: length})
		if err != nil {
			return 0, err
		}
		reply, err := b.c.Call(ctx, SubjectBatchFileContent, body, opts...)
		if err != nil {
			return 0, err
		}
		pieceSize, _ := strconv.ParseInt(reply.Header.Get(HeaderFileSize), 10, 64)
		begins, err := strconv.ParseInt(reply.Header.Get(HeaderFileOffset), 10, 64)
		switch {
		case err != nil || begins != offset:
			return 0, b.broken(id, fmt.Sprintf("asked for offset %d, got %q", offset, reply.Header.Get(HeaderFileOffset)))
		case size < 0:
			size, digest = pieceSize, reply.Header.Get(HeaderFileDigest)
		case pieceSize != size || reply.Header.Get(HeaderFileDigest) != digest:
			return 0, b.broken(id, "it changed while it was read")
		}
		if len(reply.Data) == 0 && offset < size {
			return 0, b.broken(id, fmt.Sprintf("no bytes at offset %d of %d", offset, size))
		}
		hasher.Write(reply.Data)
		if _, err := w.Write(reply.Data); err != nil {
			return 0, err
		}
		if offset += int64(len(reply.Data)); offset > size {
			return 0, b.broken(id, fmt.Sprintf("%d bytes read of %d", offset, size))
		}
	}
	return size, b.checkDigest(id, digest, hasher.Sum(nil))
}

// checkDigest compares the stored SHA-256=<base64url> digest (a file stored without one, by
// another writer, is taken as read).
func (b *Batches) checkDigest(id, digest string, computed []byte) error {
	const prefix = "sha-256="
	if !strings.HasPrefix(strings.ToLower(digest), prefix) {
		return nil
	}
	stored, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(digest[len(prefix):], "="))
	if err != nil {
		return b.broken(id, "unreadable digest "+digest)
	}
	if !bytes.Equal(stored, computed) {
		return b.broken(id, "the bytes read do not match its digest")
	}
	return nil
}

func (b *Batches) broken(id, why string) error {
	return &StreamError{Message: "file " + id + ": " + why}
}

// Results returns every line of a finished batch's output and error files, in file order.
func (b *Batches) Results(ctx context.Context, batch *Batch, opts ...CallOption) ([]BatchResult, error) {
	var results []BatchResult
	for _, id := range []string{batch.OutputFileID, batch.ErrorFileID} {
		if id == "" {
			continue
		}
		var content bytes.Buffer
		if _, err := b.ReadFile(ctx, id, &content, opts...); err != nil {
			return nil, err
		}
		for _, line := range bytes.Split(content.Bytes(), []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var result BatchResult
			if err := json.Unmarshal(line, &result); err != nil {
				return nil, err
			}
			results = append(results, result)
		}
	}
	return results, nil
}
