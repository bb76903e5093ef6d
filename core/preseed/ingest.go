package preseed

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
)

// ingest reads the whole bundle again and writes the blobs its images need
// into the content store, verified against their digests by containerd on
// commit. Blobs the store already has are skipped without being read when
// the file is seekable and not being hashed against a preseed manifest.
//
// This is a hand-written walk over the tar instead of containerd's
// archive.ImportIndex (which client.Import calls) because ImportIndex
// ingests every regular entry under the digest of whatever bytes it holds,
// ignores symlinks and cleans "../" names silently, cannot skip a blob the
// store already has (it re-streams shared layers), and hashes every byte on
// the client a second time. Image records, GC labels and unpacking still go
// through containerd's images, content and client packages.
func ingest(ctx context.Context, s *bundlefile.Stream, cs content.Store, m *bundlefile.Metadata) error {
	if err := ingestJSON(ctx, cs, m); err != nil {
		return err
	}
	have := make(map[digest.Digest]bool)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := bundleformat.Next(s.Tar)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := ingestEntry(ctx, s.Tar, hdr, cs, m, have); err != nil {
			return err
		}
	}
	return checkStored(ctx, cs, m, have)
}

// ingestJSON writes the JSON blobs, already in memory, each with its GC
// labels (see gcLabels).
func ingestJSON(ctx context.Context, cs content.Store, m *bundlefile.Metadata) error {
	labels, err := gcLabels(ctx, m)
	if err != nil {
		return err
	}
	for d, b := range m.JSON {
		desc := ocispec.Descriptor{Digest: d, Size: int64(len(b))}
		if err := writeJSON(ctx, cs, desc, b, labels[d]); err != nil {
			return fmt.Errorf("failed to write blob %s (%s): %w", d, m.Owner[d], err)
		}
	}
	return nil
}

// ingestEntry handles one entry of the second pass: index.json must not
// have changed since the first; a layer the images need and not yet
// written goes to the store (and into have); anything else is skipped.
func ingestEntry(ctx context.Context, tr *tar.Reader, hdr *tar.Header, cs content.Store, m *bundlefile.Metadata, have map[digest.Digest]bool) error {
	if hdr.Name == bundleformat.IndexEntry {
		b, err := bundleformat.ReadSmall(tr, hdr, bundleformat.MaxJSONBlob)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, m.Index) {
			return errors.New("index.json changed while the bundle was being imported")
		}
		return nil
	}
	d, ok := bundleformat.BlobDigest(hdr.Name)
	if !ok {
		return nil
	}
	desc, ok := m.Layers[d]
	if !ok || have[d] {
		return nil
	}
	if hdr.Size != desc.Size {
		return fmt.Errorf("blob %s (%s) is %d bytes, its descriptor says %d", d, m.Owner[d], hdr.Size, desc.Size)
	}
	ref := "preseed-" + d.String()
	if err := content.WriteBlob(ctx, cs, ref, tr, desc); err != nil {
		// A failed ingest must not be resumed from its bad bytes later.
		if aerr := cs.Abort(context.WithoutCancel(ctx), ref); aerr != nil && !errdefs.IsNotFound(aerr) {
			err = fmt.Errorf("%w (and failed to abort the ingest: %v)", err, aerr)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("broken tar: blob %s (%s) is truncated: %w", d, m.Owner[d], err)
		}
		return fmt.Errorf("failed to write blob %s (%s): %w", d, m.Owner[d], err)
	}
	have[d] = true
	return nil
}

// checkStored checks the layers the bundle did not hold: fine if the store
// already has them, at the size their descriptor says.
func checkStored(ctx context.Context, cs content.Store, m *bundlefile.Metadata, have map[digest.Digest]bool) error {
	var missing []string
	for d, desc := range m.Layers {
		if have[d] {
			continue
		}
		info, err := cs.Info(ctx, d)
		if errdefs.IsNotFound(err) {
			missing = append(missing, fmt.Sprintf("%s (%s)", d, m.Owner[d]))
			continue
		}
		if err != nil {
			return fmt.Errorf("failed to look up blob %s: %w", d, err)
		}
		if info.Size != desc.Size {
			return fmt.Errorf("blob %s (%s) is %d bytes in the store, its descriptor says %d", d, m.Owner[d], info.Size, desc.Size)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("missing blob: %s", strings.Join(missing, ", "))
	}
	return nil
}
