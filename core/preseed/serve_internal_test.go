package preseed

import (
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
)

// unserved is what the wait for the CRI decides on: each way the CRI's
// list can fall short of a preseeded image's names is named.
func TestUnserved(t *testing.T) {
	const tag, byIndex, byManifest = "x.test/a:1", "x.test/a@sha256:1", "x.test/a@sha256:2"
	want := []servedName{{name: tag, image: tag}, {name: byIndex, image: tag}, {name: byManifest, image: tag}}
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
		if _, got := unserved(c.list, want); !slices.Equal(got, c.want) {
			t.Errorf("%s: unserved = %q, want %q", c.name, got, c.want)
		}
	}
}

// Past the wait, each bundle with names the CRI does not serve fails,
// naming them; the others are left alone.
func TestFailUnserved(t *testing.T) {
	a, b := &bundle{File: bundlefile.File{Path: "/p/k8s.io/a.tar"}}, &bundle{File: bundlefile.File{Path: "/p/k8s.io/b.tar"}}
	failUnserved([]servedName{{name: "a:1", b: a}, {name: "a@sha256:1", b: a}}, []string{"a:1 (not listed)", "a@sha256:1 (not pinned)"}, DefaultCRIWait)
	if a.err == nil || !strings.Contains(a.err.Error(), "/p/k8s.io/a.tar") || !strings.Contains(a.err.Error(), "a:1 (not listed); a@sha256:1 (not pinned)") {
		t.Errorf("bundle a: %v, want an error naming it and both names", a.err)
	}
	if b.err != nil {
		t.Errorf("bundle b failed: %v", b.err)
	}
}
