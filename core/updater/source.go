package updater

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// sentinel is an error value that can be a constant.
type sentinel string

func (s sentinel) Error() string { return string(s) }

// errNoPayload is a source with no payload published.
const errNoPayload = sentinel("no payload published")

// source is where payloads are published: a base URL or a directory.
type source interface {
	// open opens one of the payload's files; a missing one is
	// errNoPayload.
	open(ctx context.Context, name string) (io.ReadCloser, error)
}

func newSource(s string) source {
	if strings.HasPrefix(s, "/") {
		return dirSource(s)
	}
	return httpSource{base: strings.TrimSuffix(s, "/"), client: &http.Client{}}
}

type httpSource struct {
	base   string
	client *http.Client
}

func (h httpSource) open(ctx context.Context, name string) (io.ReadCloser, error) {
	url := h.base + "/" + name
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch %s: %w", url, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, nil
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %w", url, errNoPayload)
	}
	resp.Body.Close()
	return nil, fmt.Errorf("failed to fetch %s: %s", url, resp.Status)
}

type dirSource string

func (d dirSource) open(_ context.Context, name string) (io.ReadCloser, error) {
	p := filepath.Join(string(d), name)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", p, errNoPayload)
	}
	return f, err
}

// readSmall reads a small file of src whole, up to limit bytes.
func readSmall(ctx context.Context, src source, name string, limit int64) ([]byte, error) {
	r, err := src.open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

// decoder is a zstd stream on one goroutine, bounded in memory.
type decoder struct{ *zstd.Decoder }

func (d decoder) Close() error { d.Decoder.Close(); return nil }

func newDecoder(r io.Reader) (io.ReadCloser, error) {
	d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
	if err != nil {
		return nil, fmt.Errorf("failed to start decompressing: %w", err)
	}
	return decoder{d}, nil
}
