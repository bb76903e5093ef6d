package bundleformat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readBlobs reads blob entries until no JSON blob is pending. A blob read
// before its referrer is kept aside (within bounds) until it is needed.
func (r *reader) readBlobs(ctx context.Context) error {
	for len(r.pending) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := Next(r.tr)
		if err == io.EOF {
			return r.missing()
		}
		if err != nil {
			return err
		}
		d, ok := BlobDigest(hdr.Name)
		if !ok {
			return fmt.Errorf("entry %q after index.json: want %s<hex>", hdr.Name, BlobPrefix)
		}
		if _, ok := r.pending[d]; ok {
			b, err := ReadSmall(r.tr, hdr, MaxJSONBlob)
			if err != nil {
				return err
			}
			if err := r.resolve(d, b); err != nil {
				return err
			}
			continue
		}
		if _, kept := r.spare[d]; !kept && hdr.Size <= maxSpareBlob && r.spareTotal+hdr.Size <= maxSpareTotal {
			b, err := ReadSmall(r.tr, hdr, maxSpareBlob)
			if err != nil {
				return err
			}
			r.spare[d] = b
			r.spareTotal += hdr.Size
		}
	}
	return nil
}

// missing is the error for the blobs still pending at the end of the tar.
func (r *reader) missing() error {
	var missing []string
	for d, ro := range r.pending {
		missing = append(missing, fmt.Sprintf("%s (%s)", d, ro.owner))
	}
	sort.Strings(missing)
	return fmt.Errorf("missing blob: %s", strings.Join(missing, ", "))
}

// resolve records the pending JSON blob d and its children, and resolves
// in turn any child already kept aside. A work list rather than recursion:
// a chain of nested indexes cannot grow the stack.
func (r *reader) resolve(d digest.Digest, b []byte) error {
	type work struct {
		d digest.Digest
		b []byte
	}
	todo := []work{{d, b}}
	for len(todo) > 0 {
		w := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		children, err := r.record(w.d, w.b)
		if err != nil {
			return err
		}
		for _, c := range children {
			if _, done := r.m.JSON[c.desc.Digest]; done {
				continue
			}
			if _, queued := r.pending[c.desc.Digest]; queued {
				continue
			}
			r.pending[c.desc.Digest] = c
			if sb, ok := r.spare[c.desc.Digest]; ok {
				delete(r.spare, c.desc.Digest)
				todo = append(todo, work{c.desc.Digest, sb})
			}
		}
	}
	return nil
}

// record checks a pending JSON blob against its descriptor, keeps it and
// returns the JSON blobs it references.
func (r *reader) record(d digest.Digest, b []byte) ([]role, error) {
	ro := r.pending[d]
	delete(r.pending, d)
	if int64(len(b)) != ro.desc.Size {
		return nil, fmt.Errorf("blob %s (%s) is %d bytes, its descriptor says %d", d, ro.owner, len(b), ro.desc.Size)
	}
	if digest.FromBytes(b) != d {
		return nil, fmt.Errorf("blob %s (%s) does not match its digest", d, ro.owner)
	}
	r.m.JSON[d] = b
	r.m.Owner[d] = ro.owner
	switch mt := ro.desc.MediaType; {
	case IsIndex(mt):
		return r.indexChildren(d, ro, b)
	case IsManifest(mt):
		return r.manifestChildren(d, ro, b)
	case IsConfig(mt):
		return nil, nil // a leaf; checked in finish
	default:
		return nil, fmt.Errorf("blob %s (%s) has unsupported media type %q", d, ro.owner, mt)
	}
}

// indexChildren returns the manifests of an index the policy follows.
func (r *reader) indexChildren(d digest.Digest, ro role, b []byte) ([]role, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("blob %s (%s) is not an index: %w", d, ro.owner, err)
	}
	chosen, err := r.choose(d, ro.owner, idx, ro.held)
	if err != nil {
		return nil, err
	}
	var out []role
	for _, c := range chosen {
		out = append(out, role{desc: c, owner: "manifest of " + ro.owner})
	}
	return out, nil
}

// choose picks what of an index is followed: with a platform, its best
// matching manifest; else every manifest and nested index. An index
// narrowed to the held platforms (AnnotationPlatforms) offers only their
// manifests.
func (r *reader) choose(d digest.Digest, owner string, idx ocispec.Index, held []string) ([]ocispec.Descriptor, error) {
	cands := idx.Manifests
	if held != nil {
		var err error
		if cands, err = heldManifests(d, owner, idx, held); err != nil {
			return nil, err
		}
	}
	p := r.policy.Platform
	if p == nil {
		for _, c := range cands {
			if !IsIndex(c.MediaType) && !IsManifest(c.MediaType) {
				return nil, fmt.Errorf("index %s (%s) lists %s of media type %q, neither an index nor a manifest", d, owner, c.Digest, c.MediaType)
			}
			if err := c.Digest.Validate(); err != nil {
				return nil, fmt.Errorf("index %s (%s): %w", d, owner, err)
			}
		}
		return cands, nil
	}
	var best *ocispec.Descriptor
	for i, c := range cands {
		if c.Platform == nil || !p.Match(*c.Platform) || !IsManifest(c.MediaType) {
			continue
		}
		if best == nil || p.Less(*c.Platform, *best.Platform) {
			best = &cands[i]
		}
	}
	if best == nil && held != nil {
		return nil, fmt.Errorf("%s: the bundle holds only %s of index %s, none for this machine's platform", owner, strings.Join(held, ", "), d)
	}
	if best == nil {
		return nil, fmt.Errorf("index %s (%s) has no manifest for this machine's platform", d, owner)
	}
	if err := best.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("index %s (%s): %w", d, owner, err)
	}
	return []ocispec.Descriptor{*best}, nil
}

// heldManifests returns the manifests of an index for the held platforms,
// in index order; each held platform must have one.
func heldManifests(d digest.Digest, owner string, idx ocispec.Index, held []string) ([]ocispec.Descriptor, error) {
	var out []ocispec.Descriptor
	found := map[string]bool{}
	for _, c := range idx.Manifests {
		if c.Platform == nil || !IsManifest(c.MediaType) {
			continue
		}
		if f := FormatPlatform(*c.Platform); slices.Contains(held, f) {
			out = append(out, c)
			found[f] = true
		}
	}
	for _, h := range held {
		if !found[h] {
			return nil, fmt.Errorf("%s: index %s has no manifest for %s, which index.json's %s lists", owner, d, h, AnnotationPlatforms)
		}
	}
	return out, nil
}

// manifestChildren records a manifest's layers and returns its config.
func (r *reader) manifestChildren(d digest.Digest, ro role, b []byte) ([]role, error) {
	var mf ocispec.Manifest
	if err := json.Unmarshal(b, &mf); err != nil {
		return nil, fmt.Errorf("blob %s (%s) is not a manifest: %w", d, ro.owner, err)
	}
	if err := mf.Config.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("manifest %s (%s): config: %w", d, ro.owner, err)
	}
	for _, l := range mf.Layers {
		if err := l.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("manifest %s (%s): layer: %w", d, ro.owner, err)
		}
		r.m.Layers[l.Digest] = l
		if _, ok := r.m.Owner[l.Digest]; !ok {
			r.m.Owner[l.Digest] = "layer of " + ro.owner
		}
	}
	return []role{{desc: mf.Config, owner: "config of " + ro.owner}}, nil
}
