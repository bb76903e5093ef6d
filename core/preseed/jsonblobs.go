package preseed

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
)

// The JSON blobs of a bundle (index, manifests, configs) are small, in
// memory since the check phase and checked against their digests there.
// The import writes each with its GC labels in the commit and reads them
// from memory after that: each read or label update of containerd's
// content store is a round trip, and each update a transaction of its
// metadata database (with an fsync on disk).

// memBlobs serves the JSON blobs from memory; any other blob is not found.
type memBlobs map[digest.Digest][]byte

func (m memBlobs) ReaderAt(_ context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	b, ok := m[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s is not one of the bundle's JSON blobs: %w", desc.Digest, errdefs.ErrNotFound)
	}
	return memReaderAt{bytes.NewReader(b)}, nil
}

// memReaderAt is a content.ReaderAt over bytes in memory.
type memReaderAt struct{ *bytes.Reader }

func (memReaderAt) Close() error { return nil }

// jsonStore is the content store the unpacker is given: it reads the JSON
// blobs, which the import has just written, from memory and everything
// else (layers, updates) from containerd's content store.
type jsonStore struct {
	content.Store
	json memBlobs
}

func (s jsonStore) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	if _, ok := s.json[desc.Digest]; ok {
		return s.json.ReaderAt(ctx, desc)
	}
	return s.Store.ReaderAt(ctx, desc)
}

// labelRecorder is the content.Manager images.SetChildrenLabels is given
// to compute the GC labels: it keeps them, per blob, instead of sending
// them. It supports nothing else.
type labelRecorder map[digest.Digest]map[string]string

func (r labelRecorder) Update(_ context.Context, info content.Info, _ ...string) (content.Info, error) {
	if r[info.Digest] == nil {
		r[info.Digest] = make(map[string]string)
	}
	maps.Copy(r[info.Digest], info.Labels)
	return info, nil
}

func (labelRecorder) Info(context.Context, digest.Digest) (content.Info, error) {
	return content.Info{}, errdefs.ErrNotImplemented
}

func (labelRecorder) Walk(context.Context, content.WalkFunc, ...string) error {
	return errdefs.ErrNotImplemented
}

func (labelRecorder) Delete(context.Context, digest.Digest) error {
	return errdefs.ErrNotImplemented
}

// gcLabels are the GC labels of the bundle's JSON blobs, as client.Import
// sets them with images.SetChildrenLabels: from each image's target to
// the manifests the bundle holds (heldChildren), from a manifest to its
// config and layers (cached ones too, absent from the store, as a pull of
// a layer the snapshotter already has leaves them).
func gcLabels(ctx context.Context, m *bundlefile.Metadata) (labelRecorder, error) {
	rec := make(labelRecorder)
	for _, im := range m.Unpacked {
		if err := images.Walk(ctx, images.SetChildrenLabels(rec, heldChildren(memBlobs(m.JSON), m)), im.Target); err != nil {
			return nil, fmt.Errorf("failed to find the content of image %s: %w", im.Name, err)
		}
	}
	return rec, nil
}

// writeJSON writes one JSON blob with its GC labels set by the commit. A
// blob the store has already (another image's, or written by someone
// else meanwhile) gets them by an update; containerd has then added it to
// the import's lease already, when it refused the writer.
func writeJSON(ctx context.Context, cs content.Store, desc ocispec.Descriptor, b []byte, labels map[string]string) error {
	ref := ingestRefPrefix + desc.Digest.String()
	w, err := content.OpenWriter(ctx, cs, content.WithRef(ref), content.WithDescriptor(desc))
	if errdefs.IsAlreadyExists(err) {
		return label(ctx, cs, desc.Digest, labels)
	}
	if err != nil {
		return err
	}
	defer w.Close()
	// Written from offset 0, whatever an ingest under the ref left (the
	// server truncates it): never resumed. This costs no round trip.
	if err := w.Truncate(0); err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	err = w.Commit(ctx, desc.Size, desc.Digest, content.WithLabels(labels))
	if errdefs.IsAlreadyExists(err) {
		return label(ctx, cs, desc.Digest, labels)
	}
	return err
}

// label sets labels on a blob the store has, leaving its other labels.
func label(ctx context.Context, cs content.Manager, d digest.Digest, labels map[string]string) error {
	if len(labels) == 0 {
		return nil
	}
	var fields []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		fields = append(fields, "labels."+k)
	}
	_, err := cs.Update(ctx, content.Info{Digest: d, Labels: labels}, fields...)
	return err
}
