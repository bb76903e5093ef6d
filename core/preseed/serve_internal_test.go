package preseed

import (
	"slices"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// unserved is what the wait for the CRI decides on: each way the CRI's
// list can fall short of a preseeded image's names is named.
func TestUnserved(t *testing.T) {
	const tag, byIndex, byManifest = "x.test/a:1", "x.test/a@sha256:1", "x.test/a@sha256:2"
	want := []servedName{{tag, tag}, {byIndex, tag}, {byManifest, tag}}
	img := func(id string, pinned bool, tags, digests []string) *runtimeapi.Image {
		return &runtimeapi.Image{Id: id, Pinned: pinned, RepoTags: tags, RepoDigests: digests}
	}
	for _, c := range []struct {
		name string
		list []*runtimeapi.Image
		want []string
	}{
		{"all served", []*runtimeapi.Image{img("c1", true, []string{tag}, []string{byIndex, byManifest})}, nil},
		{"nothing yet", nil, []string{tag + " (not listed)", byIndex + " (not listed)", byManifest + " (not listed)"}},
		{"tag only, no RepoDigests yet", []*runtimeapi.Image{img("c1", true, []string{tag}, nil)},
			[]string{byIndex + " (not listed)", byManifest + " (not listed)"}},
		{"not pinned", []*runtimeapi.Image{img("c1", false, []string{tag}, []string{byIndex, byManifest})},
			[]string{tag + " (not pinned)", byIndex + " (not pinned)", byManifest + " (not pinned)"}},
		{"a digest name on another image", []*runtimeapi.Image{
			img("c1", true, []string{tag}, []string{byIndex}), img("c2", true, nil, []string{byManifest})},
			[]string{byManifest + " (CRI image c2, but " + tag + " is c1)"}},
	} {
		if got := unserved(c.list, want); !slices.Equal(got, c.want) {
			t.Errorf("%s: unserved = %q, want %q", c.name, got, c.want)
		}
	}
}
