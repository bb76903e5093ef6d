package pull

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
)

// Lock is the lock file of pulled images.
type Lock struct {
	Images []LockEntry `json:"images"`
}

// LockEntry pins one image.
type LockEntry struct {
	// Name is the Bazel repository name the image is available as.
	Name string `json:"name"`
	// Image is the repository, without tag or digest.
	Image string `json:"image"`
	// Tag is what Digest was resolved from; only the updater reads it.
	Tag string `json:"tag,omitempty"`
	// Digest is the pinned index or manifest digest.
	Digest string `json:"digest,omitempty"`
	// Platforms narrow an index; empty means all.
	Platforms []string `json:"platforms,omitempty"`
	// Manifests maps each platform to its manifest digest under Digest.
	Manifests map[string]string `json:"manifests,omitempty"`
	// Mirrors are repositories holding the same image, tried in order
	// before Image when fetching (see Request.Mirrors).
	Mirrors []string `json:"mirrors,omitempty"`
}

// maxLockDepth bounds the nesting of a lock file (it has four levels), so a
// hostile file cannot make the syntax check recurse without end.
const maxLockDepth = 8

// ReadLock reads and checks a lock file.
func ReadLock(path string) (*Lock, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read lock file %s: %w", path, err)
	}
	return parseLock(path, data)
}

// parseLock checks and decodes the contents of the lock file at path.
func parseLock(path string, data []byte) (*Lock, error) {
	if err := checkLockSyntax(data); err != nil {
		return nil, fmt.Errorf("failed to parse lock file %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var l Lock
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("failed to parse lock file %s: %w", path, err)
	}
	seen := map[string]bool{}
	for i, e := range l.Images {
		if e.Name == "" || e.Image == "" {
			return nil, fmt.Errorf("lock file %s: images[%d] needs a name and an image", path, i)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("lock file %s: name %q is used twice", path, e.Name)
		}
		seen[e.Name] = true
		if err := checkLockEntry(e); err != nil {
			return nil, fmt.Errorf("lock file %s: images[%d] (%s): %w", path, i, e.Name, err)
		}
	}
	return &l, nil
}

// checkLockSyntax refuses what encoding/json would let through but the
// Starlark extension reads differently or not at all (json.decode, exact
// keys): anything but one object, data after it, a key given twice in one
// object, and keys that match a field only when case is ignored.
func checkLockSyntax(data []byte) error {
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := walkLockJSON(dec, 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

// walkLockJSON reads one JSON value; depth counts the objects and arrays
// around it (the entries of images are at 2).
func walkLockJSON(dec *json.Decoder, depth int) error {
	if depth > maxLockDepth {
		return fmt.Errorf("nested deeper than %d levels", maxLockDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := tok.(string)
			if seen[key] {
				return fmt.Errorf("key %q is given twice in one object", key)
			}
			seen[key] = true
			if !lockKeyAllowed(depth, key) {
				return fmt.Errorf("unknown key %q (keys are case-sensitive)", key)
			}
			if err := walkLockJSON(dec, depth+1); err != nil {
				return err
			}
		}
	case json.Delim('['):
		for dec.More() {
			if err := walkLockJSON(dec, depth+1); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	_, err = dec.Token() // the closing } or ]
	return err
}

// lockKeyAllowed: the keys of the top level and of an entry are the json
// tags of Lock and LockEntry; the keys of manifests are platforms.
func lockKeyAllowed(depth int, key string) bool {
	switch depth {
	case 0:
		return key == "images"
	case 2:
		switch key {
		case "name", "image", "tag", "digest", "platforms", "manifests", "mirrors":
			return true
		}
		return false
	}
	return true
}

// checkLockEntry checks the fields of an entry that name an image: the
// repository, the digests and the platforms.
func checkLockEntry(e LockEntry) error {
	if _, err := name.NewRepository(e.Image); err != nil {
		return fmt.Errorf("image %q is not a repository name (no tag or digest here): %w", e.Image, err)
	}
	if e.Digest != "" {
		if err := checkSHA256(e.Digest); err != nil {
			return err
		}
	}
	if _, err := parsePlatforms(e.Platforms); err != nil {
		return err
	}
	for _, m := range e.Mirrors {
		if _, err := name.NewRepository(m); err != nil {
			return fmt.Errorf("mirror %q is not a repository name (no tag or digest here): %w", m, err)
		}
	}
	plats := make([]string, 0, len(e.Manifests))
	for p := range e.Manifests {
		plats = append(plats, p)
	}
	sort.Strings(plats)
	for _, p := range plats {
		if _, err := parsePlatforms([]string{p}); err != nil {
			return fmt.Errorf("manifests: %w", err)
		}
		if err := checkSHA256(e.Manifests[p]); err != nil {
			return fmt.Errorf("manifests[%s]: %w", p, err)
		}
	}
	return nil
}

func checkSHA256(s string) error {
	d, err := digest.Parse(s)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %q is not sha256:<64 hex digits>", s)
	}
	return nil
}

// Encode returns the lock file's canonical bytes: entries sorted by name,
// map keys sorted, two-space indent, a final newline.
func (l *Lock) Encode() ([]byte, error) {
	sorted := *l
	sorted.Images = append([]LockEntry(nil), l.Images...)
	sort.Slice(sorted.Images, func(i, j int) bool { return sorted.Images[i].Name < sorted.Images[j].Name })
	if sorted.Images == nil {
		sorted.Images = []LockEntry{}
	}
	data, err := json.MarshalIndent(sorted, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("failed to encode lock file: %w", err)
	}
	return append(data, '\n'), nil
}

// UpdateOptions control Update.
type UpdateOptions struct {
	// Refresh names entries whose tag is resolved again even though they
	// already have a digest. Nothing else pinned is re-resolved.
	Refresh []string
	// Remote options, e.g. authentication, for the registry.
	Remote []remote.Option
}

// Update resolves the tag of every entry without a digest (and of the
// entries named in opts.Refresh), then fills in each entry's per-platform
// manifest digests from its pinned digest. It returns one line per change.
func Update(ctx context.Context, l *Lock, opts UpdateOptions) ([]string, error) {
	refresh := map[string]bool{}
	for _, n := range opts.Refresh {
		refresh[n] = true
	}
	ropts := append([]remote.Option{remote.WithContext(ctx)}, opts.Remote...)
	var changes []string
	for i := range l.Images {
		e := &l.Images[i]
		delete(refresh, e.Name)
		if e.Digest == "" || refreshWanted(opts.Refresh, e.Name) {
			if e.Tag == "" {
				return nil, fmt.Errorf("image %s (%s) has neither digest nor tag: give a tag to resolve", e.Name, e.Image)
			}
			tagged, err := name.NewTag(e.Image + ":" + e.Tag)
			if err != nil {
				return nil, fmt.Errorf("image %s: invalid tag %q: %w", e.Name, e.Tag, err)
			}
			desc, err := remote.Head(tagged, ropts...)
			if err != nil {
				return nil, fmt.Errorf("failed to resolve %s for %s: %w", tagged, e.Name, err)
			}
			if d := desc.Digest.String(); d != e.Digest {
				changes = append(changes, fmt.Sprintf("%s: %s resolved to %s (was %q)", e.Name, tagged, d, e.Digest))
				e.Digest = d
				e.Manifests = nil
			}
		}
		if err := fillManifests(e, ropts); err != nil {
			return nil, err
		}
	}
	if len(refresh) > 0 {
		var names []string
		for n := range refresh {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("no image named %v in the lock file", names)
	}
	return changes, nil
}

func refreshWanted(names []string, n string) bool {
	for _, r := range names {
		if r == n {
			return true
		}
	}
	return false
}

// fillManifests records, from the pinned digest only, which manifest serves
// each platform; an entry that already has them all is left alone.
func fillManifests(e *LockEntry, ropts []remote.Option) error {
	if len(e.Manifests) > 0 && (len(e.Platforms) == 0 || allKeys(e.Manifests, e.Platforms)) {
		return nil
	}
	ref, err := pinnedReference(Request{Image: e.Image, Digest: e.Digest})
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return fmt.Errorf("failed to fetch %s for %s: %w", ref, e.Name, err)
	}
	plats, err := parsePlatforms(e.Platforms)
	if err != nil {
		return fmt.Errorf("image %s: %w", e.Name, err)
	}
	manifests := map[string]string{}
	switch {
	case desc.MediaType.IsIndex():
		ii, err := desc.ImageIndex()
		if err != nil {
			return fmt.Errorf("failed to read index %s: %w", ref, err)
		}
		im, err := ii.IndexManifest()
		if err != nil {
			return fmt.Errorf("failed to read index %s: %w", ref, err)
		}
		for _, d := range im.Manifests {
			if d.Platform == nil || !d.MediaType.IsImage() {
				continue
			}
			if len(plats) == 0 || matchesAny(*d.Platform, plats) {
				manifests[d.Platform.String()] = d.Digest.String()
			}
		}
	default:
		_, p, err := singleImage(ref, desc)
		if err != nil {
			return err
		}
		manifests[p.String()] = desc.Digest.String()
	}
	for _, p := range plats {
		if !anyMatches(platformsOf(manifests), p) {
			return fmt.Errorf("image %s (%s) has no manifest for platform %s", e.Name, ref, p.String())
		}
	}
	e.Manifests = manifests
	return nil
}

func allKeys(m map[string]string, keys []string) bool {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}

// anyMatches reports whether one of have satisfies want.
func anyMatches(have []v1.Platform, want v1.Platform) bool {
	for _, h := range have {
		if matchesAny(h, []v1.Platform{want}) {
			return true
		}
	}
	return false
}

func platformsOf(m map[string]string) []v1.Platform {
	var out []v1.Platform
	for k := range m {
		if p, err := v1.ParsePlatform(k); err == nil {
			out = append(out, *p)
		}
	}
	return out
}
