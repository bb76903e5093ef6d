package pull_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Auth modes of testRegistry, as real registries use them.
const (
	anonymous = "anonymous"
	basic     = "basic"
	bearer    = "bearer"
)

const (
	testUser     = "builder"
	testPassword = "s3cret"
)

// testRegistry is go-containerregistry's registry behind the authentication
// a real registry does: HTTP basic on /v2/, or the token flow (401 with a
// Bearer challenge naming a realm; the client gets a token there with basic
// credentials and retries with it). It can also corrupt one blob's bytes on
// the way out, as a broken mirror or an attacker would.
type testRegistry struct {
	*httptest.Server
	mode  string
	token string
	inner http.Handler

	mu       sync.Mutex
	tampered map[string]bool // digest → serve corrupted bytes
	tokens   int             // tokens issued
}

func newTestRegistry(t *testing.T, mode string) *testRegistry {
	t.Helper()
	r := &testRegistry{
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
func (r *testRegistry) Host() string { return strings.TrimPrefix(r.URL, "http://") }

func (r *testRegistry) tamper(digest string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tampered[digest] = true
}

func basicOK(req *http.Request) bool {
	u, p, ok := req.BasicAuth()
	return ok && u == testUser && p == testPassword
}

func (r *testRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/token" {
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
		return
	}
	switch r.mode {
	case basic:
		if !basicOK(req) {
			w.Header().Set("WWW-Authenticate", `Basic realm="test-registry"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
	case bearer:
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
			return
		}
	}
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
		d := req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]
		r.mu.Lock()
		bad := r.tampered[d]
		r.mu.Unlock()
		if bad {
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
			return
		}
	}
	r.inner.ServeHTTP(w, req)
}
