package imagebuild

import (
	"fmt"
	"os"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Spec describes one image, as oci_image's attributes do. Nil slices and
// maps mean "keep the base image's value".
type Spec struct {
	// Base is an OCI layout directory holding the base image, or "".
	Base string `json:"base"`
	// Layers are uncompressed layer tars, applied in order.
	Layers       []string          `json:"layers"`
	Entrypoint   []string          `json:"entrypoint"`
	Cmd          []string          `json:"cmd"`
	Env          map[string]string `json:"env"`
	Workdir      string            `json:"workdir"`
	User         string            `json:"user"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	ExposedPorts []string          `json:"exposed_ports"`
	Volumes      []string          `json:"volumes"`
	OS           string            `json:"os"`
	Architecture string            `json:"architecture"`
	Variant      string            `json:"variant"`
	// TargetOS and TargetArchitecture are the build's target platform:
	// from a base that holds several platforms, without OS and
	// Architecture, its manifest is used, as rules_oci does.
	TargetOS           string `json:"target_os"`
	TargetArchitecture string `json:"target_architecture"`
}

// Build assembles the image Spec describes. Layers are gzip-compressed by
// go-containerregistry with a fixed header, so their digests are stable.
func Build(spec Spec) (v1.Image, error) {
	img := empty.Image
	if spec.Base != "" {
		base, err := LoadImageFor(spec.Base,
			ocispec.Platform{OS: spec.OS, Architecture: spec.Architecture, Variant: spec.Variant},
			ocispec.Platform{OS: spec.TargetOS, Architecture: spec.TargetArchitecture})
		if err != nil {
			return nil, err
		}
		img = base
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)

	for _, path := range spec.Layers {
		l, err := tarball.LayerFromFile(path, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, fmt.Errorf("failed to read layer %s: %w", path, err)
		}
		diffID, err := l.DiffID()
		if err != nil {
			return nil, fmt.Errorf("failed to hash layer %s: %w", path, err)
		}
		// The history names the layer by its content, not by the file
		// Bazel gave it: the same layer under another target name is the
		// same image.
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     l,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: Epoch()}, CreatedBy: "oci_image layer " + diffID.String(), Comment: "appliance build/oci"},
		})
		if err != nil {
			return nil, fmt.Errorf("failed to append layer %s: %w", path, err)
		}
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("failed to read image config: %w", err)
	}
	cf = cf.DeepCopy()
	if err := applyConfig(cf, spec); err != nil {
		return nil, err
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("failed to set image config: %w", err)
	}
	if len(spec.Annotations) > 0 {
		img = mutate.Annotations(img, spec.Annotations).(v1.Image)
	}
	return img, nil
}

func applyConfig(cf *v1.ConfigFile, spec Spec) error {
	// Fixed rather than absent: some tools print or sort by it.
	cf.Created = v1.Time{Time: Epoch()}
	if spec.OS != "" {
		cf.OS = spec.OS
	}
	if spec.Architecture != "" {
		cf.Architecture = spec.Architecture
	}
	if spec.Variant != "" {
		cf.Variant = spec.Variant
	}
	if cf.OS == "" || cf.Architecture == "" {
		return fmt.Errorf("failed to build image: os and architecture must be set when there is no base image")
	}
	c := &cf.Config
	if spec.Entrypoint != nil {
		c.Entrypoint = spec.Entrypoint
		// As Docker and rules_oci do: a new entrypoint drops the base's cmd
		// unless cmd is given too.
		if spec.Cmd == nil {
			c.Cmd = nil
		}
	}
	if spec.Cmd != nil {
		c.Cmd = spec.Cmd
	}
	if spec.Workdir != "" {
		c.WorkingDir = spec.Workdir
	}
	if spec.User != "" {
		c.User = spec.User
	}
	c.Env = mergeEnv(c.Env, spec.Env)
	if len(spec.Labels) > 0 {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		for k, v := range spec.Labels {
			c.Labels[k] = v
		}
	}
	for _, p := range spec.ExposedPorts {
		if !strings.Contains(p, "/") {
			p += "/tcp"
		}
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		c.ExposedPorts[p] = struct{}{}
	}
	for _, v := range spec.Volumes {
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		c.Volumes[v] = struct{}{}
	}
	return nil
}

// mergeEnv sets the variables of add on top of base, keeping base's order
// and appending new names sorted. Values may refer to the base's variables as
// $NAME or ${NAME} (e.g. PATH=/app:$PATH), as in rules_oci.
func mergeEnv(base []string, add map[string]string) []string {
	if len(add) == 0 {
		return base
	}
	values := map[string]string{}
	var order []string
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		if _, seen := values[k]; !seen {
			order = append(order, k)
		}
		values[k] = v
	}
	keys := make([]string, 0, len(add))
	for k := range add {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	expanded := map[string]string{}
	for _, k := range keys {
		expanded[k] = os.Expand(add[k], func(name string) string { return values[name] })
	}
	for _, k := range keys {
		if _, seen := values[k]; !seen {
			order = append(order, k)
		}
		values[k] = expanded[k]
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+values[k])
	}
	return out
}

// WriteLayout writes img as the only image of a new OCI image layout at dir,
// its index.json descriptor carrying the image's platform.
func WriteLayout(dir string, img v1.Image) (v1.Hash, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return v1.Hash{}, fmt.Errorf("failed to create layout %s: %w", dir, err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("failed to start layout %s: %w", dir, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("failed to read image config: %w", err)
	}
	plat := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	if err := p.AppendImage(img, layout.WithPlatform(plat)); err != nil {
		return v1.Hash{}, fmt.Errorf("failed to write image to layout %s: %w", dir, err)
	}
	return img.Digest()
}
