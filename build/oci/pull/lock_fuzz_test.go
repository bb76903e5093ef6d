package pull

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// realLock is the project's lock file. Bazel gives it to the test as data at
// the same place relative to the package as in the source tree, where go
// test -fuzz (CI's fuzz step) finds it.
const realLock = "../../../images/oci.lock.json"

// FuzzLock: ReadLock never panics; what it refuses it refuses naming the
// file; what it accepts is one JSON object that the Starlark extension (exact
// keys, json.decode) reads the same way, and it survives Encode and ReadLock
// unchanged, with Encode's bytes stable.
func FuzzLock(f *testing.F) {
	if _, err := ReadLock(realLock); err != nil {
		f.Fatalf("the project's lock file: %v", err)
	}
	real, err := os.ReadFile(realLock)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real)
	for _, s := range lockSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// parseLock, not ReadLock: a file per input would make the disk,
		// not the parser, what is tested.
		const path = "images/oci.lock.json"
		l, err := parseLock(path, data)
		if err != nil {
			if !strings.Contains(err.Error(), "lock file "+path) {
				t.Fatalf("error does not name the lock file %s: %v", path, err)
			}
			return
		}
		checkOneObject(t, data)
		checkNoDuplicateKeys(t, data)
		checkExactKeys(t, data, l)
		checkRoundTrip(t, l)
	})
}

// checkOneObject: the file is a single JSON object, nothing after it.
func checkOneObject(t *testing.T, data []byte) {
	t.Helper()
	if !json.Valid(data) {
		t.Fatalf("accepted a lock file that is not one JSON value: %q", data)
	}
	if trimmed := bytes.TrimSpace(data); len(trimmed) == 0 || trimmed[0] != '{' {
		t.Fatalf("accepted a lock file that is not a JSON object: %q", data)
	}
}

// checkNoDuplicateKeys: no object has a key twice, which readers resolve
// differently (the last wins, or an error).
func checkNoDuplicateKeys(t *testing.T, data []byte) {
	t.Helper()
	type frame struct {
		keys            map[string]bool
		object, wantKey bool
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("accepted %q, whose tokens do not read: %v", data, err)
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
			if key, ok := tok.(string); ok {
				if stack[n-1].keys[key] {
					t.Fatalf("accepted key %q twice in one object: %q", key, data)
				}
				stack[n-1].keys[key], stack[n-1].wantKey = true, false
				continue
			}
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			stack = append(stack, &frame{keys: map[string]bool{}, object: tok == json.Delim('{'), wantKey: true})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if n := len(stack); n > 0 {
			stack[n-1].wantKey = true
		}
	}
}

// checkExactKeys decodes the file without the structs (keys compared
// exactly, as Starlark's json.decode does) and wants the same entries.
func checkExactKeys(t *testing.T, data []byte, l *Lock) {
	t.Helper()
	var top map[string]any
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatalf("accepted %q, which does not decode as an object: %v", data, err)
	}
	for k := range top {
		if k != "images" {
			t.Fatalf("accepted top-level key %q in %q", k, data)
		}
	}
	images, _ := top["images"].([]any)
	if len(images) != len(l.Images) {
		t.Fatalf("exact decoding sees %d images, ReadLock %d, in %q", len(images), len(l.Images), data)
	}
	for i, raw := range images {
		obj, _ := raw.(map[string]any)
		got := map[string]any{}
		for k, v := range obj {
			if !emptyJSON(v) {
				got[k] = v
			}
		}
		want := entryAsGeneric(t, l.Images[i])
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("images[%d]: exact decoding sees %v, ReadLock %v, in %q", i, got, want, data)
		}
	}
}

// entryAsGeneric is e as json.Unmarshal into any would give it, without
// empty values (absent, null and empty are one to the readers).
func entryAsGeneric(t *testing.T, e LockEntry) map[string]any {
	t.Helper()
	out := map[string]any{}
	for k, v := range map[string]string{"name": e.Name, "image": e.Image, "tag": e.Tag, "digest": e.Digest} {
		if v != "" {
			out[k] = v
		}
	}
	if len(e.Platforms) > 0 {
		ps := []any{}
		for _, p := range e.Platforms {
			ps = append(ps, p)
		}
		out["platforms"] = ps
	}
	if len(e.Mirrors) > 0 {
		ms := []any{}
		for _, m := range e.Mirrors {
			ms = append(ms, m)
		}
		out["mirrors"] = ms
	}
	if len(e.Manifests) > 0 {
		ms := map[string]any{}
		for k, v := range e.Manifests {
			ms[k] = v
		}
		out["manifests"] = ms
	}
	return out
}

// emptyJSON: null, "", [] and {}, which omitempty writes as absent.
func emptyJSON(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

// checkRoundTrip: Encode's output reads back as the same lock and encodes
// to the same bytes.
func checkRoundTrip(t *testing.T, l *Lock) {
	t.Helper()
	enc, err := l.Encode()
	if err != nil {
		t.Fatalf("Encode of an accepted lock: %v", err)
	}
	back, err := parseLock("encoded.json", enc)
	if err != nil {
		t.Fatalf("Encode wrote a lock file that ReadLock refuses: %v\n%s", err, enc)
	}
	if want, got := normalize(l), normalize(back); !reflect.DeepEqual(want, got) {
		t.Fatalf("round trip changed the lock:\nbefore %+v\nafter  %+v\n%s", want, got, enc)
	}
	again, err := back.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, enc) {
		t.Fatalf("Encode is not stable:\n%s\nthen\n%s", enc, again)
	}
}

// normalize sorts entries by name, as Encode does, and makes empty lists and
// maps nil, which omitempty writes as absent.
func normalize(l *Lock) []LockEntry {
	out := []LockEntry{}
	for _, e := range l.Images {
		if len(e.Platforms) == 0 {
			e.Platforms = nil
		}
		if len(e.Manifests) == 0 {
			e.Manifests = nil
		}
		if len(e.Mirrors) == 0 {
			e.Mirrors = nil
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b LockEntry) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// lockSeeds are lock files as the updater writes them and as people edit
// them, plus the near misses the parser must refuse.
func lockSeeds() []string {
	return []string{
		`{"images": []}`,
		`{}`,
		`{"images": [{"name": "busybox", "image": "docker.io/library/busybox", "tag": "1.36", "platforms": ["linux/amd64"]}]}`,
		`{
  "images": [
    {
      "name": "distroless",
      "image": "gcr.io/distroless/static",
      "tag": "nonroot",
      "digest": "sha256:e8a4044e0b4ae4257efa45fc026c0bc30ad320d43bd4c1a7d5271bd241e386d0",
      "platforms": ["linux/amd64", "linux/arm64/v8"],
      "manifests": {
        "linux/amd64": "sha256:0d1ba1b4ed5b2ea8a0fd2cfbe4f6b3b2c6a1b2e4a84f5e8ea06e77c3d7d9a2f1",
        "linux/arm64/v8": "sha256:7f2e4b1c9a8d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f"
      }
    },
    {"name": "pause", "image": "registry.k8s.io/pause", "tag": "3.10"}
  ]
}
`,
		`{"images": [{"name": "x", "image": "a/b:1.0"}]}`,
		`{"images": [{"name": "m", "image": "127.0.0.1:5000/a/b", "digest": "sha256:e8a4044e0b4ae4257efa45fc026c0bc30ad320d43bd4c1a7d5271bd241e386d0", "mirrors": ["127.0.0.1:5001/a/b", "127.0.0.1:5002/c"]}]}`,
		`{"images": [{"name": "x", "image": "a/b"}, {"name": "x", "image": "a/c"}]}`,
		// Found by CI's fuzz step: an empty mirrors list is absent once encoded.
		`{"images": [{"name": "0", "image": "a/b", "mirrors": [], "platforms": [], "manifests": {}}]}`,
	}
}

// What the updater would only trip over later, or Bazel's fetch refuse
// without naming the lock file, is refused when the lock file is read.
func TestReadLockRefusesBadPins(t *testing.T) {
	const good = "sha256:e8a4044e0b4ae4257efa45fc026c0bc30ad320d43bd4c1a7d5271bd241e386d0"
	for name, c := range map[string]struct{ entry, reason string }{
		"short digest":      {`"digest": "sha256:e8a4"`, `digest "sha256:e8a4" is not sha256`},
		"sha512 digest":     {`"digest": "sha512:` + strings.Repeat("ab", 64) + `"`, "is not sha256"},
		"platform":          {`"platforms": ["linux"]`, `invalid platform "linux"`},
		"manifest platform": {`"digest": "` + good + `", "manifests": {"/amd64": "` + good + `"}`, `invalid platform "/amd64"`},
		"manifest digest":   {`"digest": "` + good + `", "manifests": {"linux/amd64": "latest"}`, `manifests[linux/amd64]: digest "latest"`},
		"uppercase digest":  {`"digest": "` + strings.ToUpper(good) + `"`, "is not sha256"},
		"mirror with tag":   {`"mirrors": ["127.0.0.1:5001/a/b:1.0"]`, `mirror "127.0.0.1:5001/a/b:1.0" is not a repository name`},
	} {
		t.Run(name, func(t *testing.T) {
			data := `{"images": [{"name": "x", "image": "a/b", ` + c.entry + `}]}`
			_, err := parseLock("images/oci.lock.json", []byte(data))
			if err == nil || !strings.Contains(err.Error(), "lock file images/oci.lock.json: images[0] (x)") || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("parseLock(%s) = %v, want an error naming the file, the entry and %q", data, err, c.reason)
			}
		})
	}
}
