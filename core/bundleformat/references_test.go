package bundleformat_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

func TestReferences(t *testing.T) {
	idx := digest.FromString("index")
	amd, arm := digest.FromString("amd64"), digest.FromString("arm64")
	repo := "docker.io/library/hello"
	for _, tc := range []struct {
		name      string
		target    digest.Digest
		manifests []digest.Digest
		want      []string
	}{
		{repo + ":1.0", amd, nil, []string{repo + ":1.0", repo + "@" + amd.String()}},
		{repo + ":1.0", amd, []digest.Digest{amd}, []string{repo + ":1.0", repo + "@" + amd.String()}},
		{repo + ":1.0", idx, []digest.Digest{amd, arm}, []string{repo + ":1.0", repo + "@" + idx.String(), repo + "@" + amd.String(), repo + "@" + arm.String()}},
		{repo + "@" + idx.String(), idx, []digest.Digest{amd}, []string{repo + "@" + idx.String(), repo + "@" + amd.String()}},
		{"127.0.0.1:5000/tp/busybox:1.36", idx, []digest.Digest{amd}, []string{"127.0.0.1:5000/tp/busybox:1.36", "127.0.0.1:5000/tp/busybox@" + idx.String(), "127.0.0.1:5000/tp/busybox@" + amd.String()}},
	} {
		got, err := bundleformat.References(tc.name, tc.target, tc.manifests...)
		if err != nil {
			t.Errorf("References(%s): %v", tc.name, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("References(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestReferencesRejects(t *testing.T) {
	idx := digest.FromString("index")
	for name, want := range map[string]string{
		"hello:1.0": "not normalised",
		"docker.io/library/hello@" + digest.FromString("other").String(): "but the image's target is",
		"docker.io/library/Hello:1":                                      "image name",
	} {
		if _, err := bundleformat.References(name, idx); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("References(%s) = %v, want an error with %q", name, err, want)
		}
	}
}
