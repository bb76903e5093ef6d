package pulltest

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const (
	testUser     = "builder"
	testPassword = "s3cret"
)

// testRegistry is go-containerregistry's registry on 127.0.0.1, optionally
// behind HTTP basic authentication, that can serve corrupted bytes for a
// blob (as a broken mirror or an attacker would) and counts the requests
// for manifests, so a test can tell which registry served a fetch.
type testRegistry struct {
	*httptest.Server
	basicAuth bool
	inner     http.Handler

	mu        sync.Mutex
	tampered  map[string]bool // digest → serve corrupted bytes
	manifests int             // manifest GETs answered
}

func newTestRegistry(t *testing.T, basicAuth bool) *testRegistry {
	t.Helper()
	r := &testRegistry{
		basicAuth: basicAuth,
		inner:     registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		tampered:  map[string]bool{},
	}
	r.Server = httptest.NewServer(r)
	t.Cleanup(r.Close)
	return r
}

// Host is host:port; go-containerregistry talks plain HTTP to 127.0.0.1.
func (r *testRegistry) Host() string { return strings.TrimPrefix(r.URL, "http://") }

func (r *testRegistry) tamper(digest string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tampered[digest] = true
}

func (r *testRegistry) manifestGets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.manifests
}

func (r *testRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.basicAuth {
		if u, p, ok := req.BasicAuth(); !ok || u != testUser || p != testPassword {
			w.Header().Set("WWW-Authenticate", `Basic realm="pulltest"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
	}
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") {
		r.mu.Lock()
		r.manifests++
		r.mu.Unlock()
	}
	d := req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]
	r.mu.Lock()
	bad := req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") && r.tampered[d]
	r.mu.Unlock()
	if !bad {
		r.inner.ServeHTTP(w, req)
		return
	}
	rec := httptest.NewRecorder()
	r.inner.ServeHTTP(rec, req)
	body := rec.Body.Bytes()
	if len(body) > 0 {
		body[len(body)/2] ^= 0xff // same length, different content
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body)
}

// closedAddr is a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// testIndex is a linux/amd64 + linux/arm64 index of small random images
// (two layers of 1 KiB each).
func testIndex(t *testing.T) v1.ImageIndex {
	t.Helper()
	idx := v1.ImageIndex(empty.Index)
	for _, p := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}} {
		img, err := random.Image(1024, 2)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = p.OS, p.Architecture
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return idx
}

// push writes idx to the registry as repo:1.
func (r *testRegistry) push(t *testing.T, repo string, idx v1.ImageIndex) name.Repository {
	t.Helper()
	tag, err := name.NewTag(r.Host() + "/" + repo + ":1")
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{}
	if r.basicAuth {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: testUser, Password: testPassword}))
	}
	if err := remote.WriteIndex(tag, idx, opts...); err != nil {
		t.Fatalf("failed to push %s: %v", tag, err)
	}
	return tag.Context()
}
