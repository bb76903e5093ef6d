package pull

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// dockerConfig is the part of a Docker config.json that holds credentials.
type dockerConfig struct {
	Auths       map[string]authn.AuthConfig `json:"auths"`
	CredHelpers map[string]string           `json:"credHelpers"`
	CredsStore  string                      `json:"credsStore"`
}

// configKeychain answers with the "auths" entries of one config.json.
type configKeychain struct {
	path  string
	auths map[string]authn.AuthConfig // by registry host
	cfg   dockerConfig
}

// DockerConfigKeychain reads the Docker config.json at path, the file the
// user named for the fetch (never a default location, so what a build uses
// is what the user chose). It understands "auths" entries (auth, or
// username and password, or tokens); a registry served by a credential
// helper is refused when asked for, since a helper needs the user's
// session, which a build action does not have.
func DockerConfigKeychain(path string) (authn.Keychain, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read Docker config %s: %w", path, err)
	}
	var cfg dockerConfig
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&cfg); err != nil {
		return nil, fmt.Errorf("failed to parse Docker config %s: %w", path, err)
	}
	k := &configKeychain{path: path, auths: map[string]authn.AuthConfig{}, cfg: cfg}
	for key, a := range cfg.Auths {
		k.auths[registryOfKey(key)] = a
	}
	return k, nil
}

// registryOfKey turns a config.json key ("host", "https://host/v1/") into
// the registry host it is for.
func registryOfKey(key string) string {
	if key == authn.DefaultAuthKey {
		return name.DefaultRegistry
	}
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	host, _, _ := strings.Cut(key, "/")
	return host
}

// Resolve implements authn.Keychain.
func (k *configKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	reg := target.RegistryStr()
	// Docker writes an empty entry for a registry whose credentials a
	// helper keeps.
	if a, ok := k.auths[reg]; ok && a != (authn.AuthConfig{}) {
		return authn.FromConfig(a), nil
	}
	if h, ok := k.cfg.CredHelpers[reg]; ok {
		return nil, fmt.Errorf("Docker config %s: registry %s uses credential helper %q, which a build action cannot run; add an \"auths\" entry for it", k.path, reg, h)
	}
	if k.cfg.CredsStore != "" {
		return nil, fmt.Errorf("Docker config %s: no \"auths\" entry for registry %s, and its credsStore %q cannot run in a build action; add an \"auths\" entry for it", k.path, reg, k.cfg.CredsStore)
	}
	return authn.Anonymous, nil
}
