// Package registrytest runs go-containerregistry's registry on 127.0.0.1
// for tests of the fetcher, behind the authentication real registries use
// (none, HTTP basic, or the bearer token flow), able to corrupt a blob on
// the way out and counting what it serves. It is test-only and must not be
// used by a build tool.
package registrytest

import (
	"encoding/json"
	"fmt"
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
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Auth modes of a Registry, as real registries use them.
const (
	Anonymous = "anonymous"
	Basic     = "basic"
	Bearer    = "bearer"
)

// The credentials the Basic and Bearer modes accept.
const (
	User     = "builder"
	Password = "s3cret"
)

// Registry is go-containerregistry's registry behind the authentication a
// real registry does: HTTP basic on /v2/, or the token flow (401 with a
// Bearer challenge naming a realm; the client gets a token there with basic
// credentials and retries with it). It can also corrupt one blob's bytes on
// the way out, as a broken mirror or an attacker would.
type Registry struct {
	*httptest.Server
	mode  string
	token string
	inner http.Handler

	mu        sync.Mutex
	tampered  map[string]bool // digest → serve corrupted bytes
	tokens    int             // tokens issued
	manifests int             // manifest GETs answered
}

// New starts a registry in mode (Anonymous, Basic or Bearer), closed when
// the test ends.
func New(t testing.TB, mode string) *Registry {
	t.Helper()
	r := &Registry{
		mode:     mode,
		token:    "tok-" + t.Name(),
		inner:    registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		tampered: map[string]bool{},
	}
	r.Server = httptest.NewServer(r)
	t.Cleanup(r.Close)
	return r
}

// Host is host:port; go-containerregistry talks plain HTTP to 127.0.0.1.
func (r *Registry) Host() string { return strings.TrimPrefix(r.URL, "http://") }

// Tamper makes the registry serve corrupted bytes (same length) for the
// blob with digest ("sha256:...").
func (r *Registry) Tamper(digest string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tampered[digest] = true
}

// Tokens is how many bearer tokens the registry issued.
func (r *Registry) Tokens() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tokens
}

// ManifestGets is how many manifest GETs the registry answered, so a test
// can tell which registry served a fetch.
func (r *Registry) ManifestGets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.manifests
}

// Creds are the credentials the registry accepts, for pushing and pulling.
func Creds() remote.Option {
	return remote.WithAuth(&authn.Basic{Username: User, Password: Password})
}

// Push writes img to the registry as ref ("repo:tag").
func (r *Registry) Push(t testing.TB, ref string, img v1.Image) name.Tag {
	t.Helper()
	tag := r.tag(t, ref)
	if err := remote.Write(tag, img, Creds()); err != nil {
		t.Fatalf("failed to push %s: %v", tag, err)
	}
	return tag
}

// PushIndex writes idx to the registry as ref ("repo:tag").
func (r *Registry) PushIndex(t testing.TB, ref string, idx v1.ImageIndex) name.Tag {
	t.Helper()
	tag := r.tag(t, ref)
	if err := remote.WriteIndex(tag, idx, Creds()); err != nil {
		t.Fatalf("failed to push index %s: %v", tag, err)
	}
	return tag
}

func (r *Registry) tag(t testing.TB, ref string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(r.Host() + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// ServeManifest makes the registry answer GET and HEAD of
// repo's manifests/<digest> with body as mediaType, whatever body's digest,
// as a lying registry would. Call it before the requests it should answer.
func (r *Registry) ServeManifest(repo, digest string, mediaType types.MediaType, body []byte) {
	inner := r.inner
	r.inner = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v2/"+repo+"/manifests/"+digest {
			w.Header().Set("Content-Type", string(mediaType))
			w.Header().Set("Docker-Content-Digest", digest)
			if req.Method == http.MethodGet {
				_, _ = w.Write(body)
			}
			return
		}
		inner.ServeHTTP(w, req)
	})
}

// ClosedAddr is a 127.0.0.1 address nothing listens on.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Digest is the digest of an image, index or layer, as a string.
func Digest(t testing.TB, d interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/token" {
		r.serveToken(w, req)
		return
	}
	if !r.authorized(w, req) {
		return
	}
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") {
		r.mu.Lock()
		r.manifests++
		r.mu.Unlock()
	}
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
		d := req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]
		r.mu.Lock()
		bad := r.tampered[d]
		r.mu.Unlock()
		if bad {
			r.serveTampered(w, req)
			return
		}
	}
	r.inner.ServeHTTP(w, req)
}

func basicOK(req *http.Request) bool {
	u, p, ok := req.BasicAuth()
	return ok && u == User && p == Password
}

// serveToken is the token endpoint of the Bearer flow.
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	if !basicOK(req) {
		w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	r.mu.Lock()
	r.tokens++
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"token": r.token, "access_token": r.token})
}

// authorized answers 401 with the mode's challenge unless req carries what
// the mode requires.
func (r *Registry) authorized(w http.ResponseWriter, req *http.Request) bool {
	switch r.mode {
	case Basic:
		if !basicOK(req) {
			w.Header().Set("WWW-Authenticate", `Basic realm="test-registry"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return false
		}
	case Bearer:
		if req.Header.Get("Authorization") != "Bearer "+r.token {
			scope := "registry:catalog:*"
			repo := strings.TrimPrefix(req.URL.Path, "/v2/")
			for _, sep := range []string{"/manifests/", "/blobs/", "/tags/"} {
				if i := strings.Index(repo, sep); i > 0 {
					scope = "repository:" + repo[:i] + ":pull,push"
				}
			}
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test-registry",scope="%s"`, r.URL, scope))
			http.Error(w, "token required", http.StatusUnauthorized)
			return false
		}
	}
	return true
}

// serveTampered serves the registry's answer with one byte flipped.
func (r *Registry) serveTampered(w http.ResponseWriter, req *http.Request) {
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
