package preseed

import (
	"context"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
)

// loggingStore is the content store ingest writes a bundle into: it logs
// "layer ingest started" once the store opened a writer for one of the
// bundle's layers (so the store did not have it yet; nothing is written
// before the log), "layer ingest progress" at each quarter of a big one,
// and "layer ingested" once that writer committed. The
// messages and fields are a contract with the power-cut E2E
// (tests/e2e/powercut): change them only together.
type loggingStore struct {
	content.Store
	// log carries the namespace and the bundle file.
	log    *zap.Logger
	layers map[digest.Digest]ocispec.Descriptor
}

// Writer opens a writer through the store and logs it if it is a layer's.
func (s *loggingStore) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	w, err := s.Store.Writer(ctx, opts...)
	if err != nil {
		return nil, err
	}
	if _, ok := s.layers[wo.Desc.Digest]; !ok {
		return w, nil
	}
	log := s.log.With(zap.String("digest", wo.Desc.Digest.String()), zap.Int64("size", wo.Desc.Size))
	log.Info("layer ingest started")
	lw := &loggingWriter{Writer: w, log: log, size: wo.Desc.Size}
	// A resumed ingest starts where it was.
	if st, err := w.Status(); err == nil {
		lw.offset = st.Offset
	}
	return lw, nil
}

// progressMin is the smallest layer whose ingest logs its progress: a big
// one, where the power-cut E2E aims a kill at a point of its own inside.
const progressMin = 16 << 20

// loggingWriter logs, for a layer of progressMin bytes or more, "layer
// ingest progress" as the bytes written pass each quarter of the layer
// (fields offset and size), and its commit.
type loggingWriter struct {
	content.Writer
	log    *zap.Logger
	size   int64
	offset int64
}

func (w *loggingWriter) Write(p []byte) (int, error) {
	n, err := w.Writer.Write(p)
	before := w.offset
	w.offset += int64(n)
	if w.size >= progressMin {
		for q := int64(1); q <= 3; q++ {
			if mark := w.size * q / 4; before < mark && w.offset >= mark {
				w.log.Info("layer ingest progress", zap.Int64("offset", w.offset))
			}
		}
	}
	return n, err
}

// Commit commits the blob; AlreadyExists means another writer committed
// the same blob first, so it is in the store as well.
func (w *loggingWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	err := w.Writer.Commit(ctx, size, expected, opts...)
	if err == nil || errdefs.IsAlreadyExists(err) {
		w.log.Info("layer ingested")
	}
	return err
}
