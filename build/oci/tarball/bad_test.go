package tarball_test

import (
	"archive/tar"
	"bytes"
	"path"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// edit rewrites a tar: change returns the entries to put instead of e.
func edit(t *testing.T, data []byte, change func(e entry) []entry) []byte {
	t.Helper()
	var out []entry
	for _, e := range readTar(t, data) {
		out = append(out, change(e)...)
	}
	return writeTar(t, out)
}

func keep(e entry) []entry { return []entry{e} }

func TestSelectErrors(t *testing.T) {
	two := dockerSave(t, map[string]v1.Image{"busybox:1.36": image(t, "linux", "amd64"), "alpine:3": image(t, "linux", "amd64")})
	// Without a selector, the tarball's images are listed.
	wantError(t, two, "", "holds 2 images", "busybox:1.36", "alpine:3")
	wantError(t, two, "busybox:9", `holds no image "busybox:9"`, "busybox:1.36", "alpine:3")
	wantError(t, two, "sha256:"+strings.Repeat("0", 64), "holds no image", "busybox:1.36")
	wantError(t, two, "sha256:nothex", "not a valid digest")

	// One tag on two different images: ambiguous.
	img1, img2 := image(t, "linux", "amd64"), image(t, "linux", "amd64")
	a := readTar(t, dockerSave(t, map[string]v1.Image{"app:1": img1}))
	b := readTar(t, dockerSave(t, map[string]v1.Image{"docker.io/library/app:1": img2}))
	var merged []entry
	var manifests []string
	for _, e := range append(a, b...) {
		if e.hdr.Name == "manifest.json" {
			manifests = append(manifests, strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(string(e.body)), "["), "]"))
			continue
		}
		merged = append(merged, e)
	}
	merged = append(merged, reg("manifest.json", []byte("["+strings.Join(manifests, ",")+"]")))
	wantError(t, writeTar(t, merged), "app:1", `image "app:1" is ambiguous`, "docker.io/library/app:1")
	wantError(t, writeTar(t, merged), "docker.io/library/app:1", "is ambiguous")
	// Its image ID picks one.
	id, _ := img2.ConfigName()
	dir, _ := mustLoad(t, writeTar(t, merged), id.String())
	sameImage(t, dir, img2)
}

func TestCompressionErrors(t *testing.T) {
	good := dockerSave(t, map[string]v1.Image{"busybox:1.36": image(t, "linux", "amd64")})
	wantError(t, []byte("just some text, not an archive\n"), "", "not a tar archive")
	wantError(t, nil, "", "not a tar archive")
	gz := compress(t, good, "gzip")
	// A flipped byte in the deflate stream, and a cut-off stream.
	bad := bytes.Clone(gz)
	bad[len(bad)/2] ^= 0xff
	wantError(t, bad, "", "corrupt gzip compression")
	wantError(t, gz[:len(gz)-20], "", "corrupt gzip compression")
	zs := compress(t, good, "zstd")
	wantError(t, zs[:len(zs)/2], "", "corrupt zstd compression")
	wantError(t, compress(t, []byte(strings.Repeat("not a tar ", 100)), "zstd"), "", "zstd-compressed, but not a tar archive")
}

func TestNoManifest(t *testing.T) {
	wantError(t, writeTar(t, []entry{reg("README", []byte("hi"))}), "", "neither index.json", "manifest.json")
	wantError(t, writeTar(t, []entry{reg("manifest.json", []byte("{not json"))}), "", "manifest.json is not a docker-save manifest")
}

func TestDigestMismatch(t *testing.T) {
	img := image(t, "linux", "amd64")
	saved := dockerSave(t, map[string]v1.Image{"busybox:1.36": img})
	layers, _ := img.Layers()
	ld, _ := layers[1].Digest()
	other := compress(t, []byte("other content"), "gzip")
	// A layer swapped for other bytes, under its own name and under a name
	// that is not a digest (only the config's diff_id can tell).
	wantError(t, edit(t, saved, func(e entry) []entry {
		if strings.Contains(e.hdr.Name, ld.Hex) {
			e.body = other
		}
		return []entry{e}
	}), "", "does not match its digest", ld.Hex)
	renamed := edit(t, saved, func(e entry) []entry {
		switch {
		case strings.Contains(e.hdr.Name, ld.Hex):
			e.hdr.Name, e.body = "layer1/layer.tar", other
		case e.hdr.Name == "manifest.json":
			e.body = bytes.ReplaceAll(e.body, []byte(ld.Hex+".tar.gz"), []byte("layer1/layer.tar"))
		}
		return []entry{e}
	})
	wantError(t, renamed, "", "layer 1", "layer1/layer.tar", "does not match its digest", "diff_id")

	// In an OCI layout: a layer blob with a flipped byte.
	ii, _ := index(t)
	exported := ctrExport(t, ii, "docker.io/library/multi:1.0")
	m, _ := ii.IndexManifest()
	i0, _ := ii.Image(m.Manifests[0].Digest)
	l0, _ := i0.Layers()
	bad, _ := l0[0].Digest()
	wantError(t, edit(t, exported, func(e entry) []entry {
		if path.Base(e.hdr.Name) == bad.Hex {
			e.body = bytes.Clone(e.body)
			e.body[10] ^= 1
		}
		return []entry{e}
	}), "", "does not match its digest", bad.Hex)
	// A layer blob missing altogether, in a manifest that is held.
	wantError(t, edit(t, exported, func(e entry) []entry {
		if path.Base(e.hdr.Name) == bad.Hex {
			return nil
		}
		return []entry{e}
	}), "", "is missing", bad.Hex)
}

func TestEscapes(t *testing.T) {
	saved := dockerSave(t, map[string]v1.Image{"busybox:1.36": image(t, "linux", "amd64")})
	with := func(extra ...entry) []byte {
		return writeTar(t, append(readTar(t, saved), extra...))
	}
	for what, c := range map[string]struct {
		data []byte
		want string
	}{
		"dot-dot":              {with(reg("../evil", []byte("x"))), `"../evil" has a ".." component`},
		"inner dot-dot":        {with(reg("a/../../evil", []byte("x"))), `has a ".." component`},
		"absolute":             {with(reg("/etc/evil", []byte("x"))), "absolute path"},
		"symlink out":          {with(link("up", "../../etc/passwd", tar.TypeSymlink)), "outside the archive"},
		"symlink absolute":     {with(link("abs", "/etc/passwd", tar.TypeSymlink)), "absolute path"},
		"hard link out":        {with(link("hl", "../etc/passwd", tar.TypeLink)), `hard link "hl"`},
		"hard link absolute":   {with(link("hl", "/etc/passwd", tar.TypeLink)), "absolute path"},
		"hard link to nothing": {with(link("hl", "nothing", tar.TypeLink)), "not an earlier file"},
		"through a symlink": {with(link("d", "blobs", tar.TypeSymlink), reg("d/x", []byte("x"))),
			`lies below the link "d"`},
		"twice": {with(reg("manifest.json", []byte("[]"))), `"manifest.json" appears twice`},
		"device": {with(entry{hdr: tar.Header{Name: "dev", Typeflag: tar.TypeChar}}),
			"only files, directories and links"},
		"link loop": {writeTar(t, []entry{link("manifest.json", "a", tar.TypeSymlink), link("a", "manifest.json", tar.TypeSymlink)}),
			"links in a row"},
		"link to a missing file": {writeTar(t, []entry{link("manifest.json", "gone.json", tar.TypeSymlink)}),
			`"manifest.json" is a link to "gone.json", which is not a file of the archive`},
	} {
		t.Run(what, func(t *testing.T) { wantError(t, c.data, "", c.want) })
	}
}

// Docker before 25 wrote a layer that several images share once and
// symlinked it from the others' directories: such links are followed.
func TestLinksInside(t *testing.T) {
	img := image(t, "linux", "amd64")
	saved := dockerSave(t, map[string]v1.Image{"busybox:1.36": img})
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	linked := edit(t, saved, func(e entry) []entry {
		if e.hdr.Name != ld.Hex+".tar.gz" {
			return keep(e)
		}
		e.hdr.Name = "shared/layer.tar"
		return []entry{
			{hdr: tar.Header{Name: "shared/", Typeflag: tar.TypeDir, Mode: 0o755}}, e,
			{hdr: tar.Header{Name: "other/", Typeflag: tar.TypeDir, Mode: 0o755}},
			link("other/layer.tar", "../shared/layer.tar", tar.TypeSymlink),
			link("hard.tar", "other/layer.tar", tar.TypeLink),
		}
	})
	linked = edit(t, linked, func(e entry) []entry {
		if e.hdr.Name == "manifest.json" {
			e.body = bytes.ReplaceAll(e.body, []byte(ld.Hex+".tar.gz"), []byte("./hard.tar"))
		}
		return keep(e)
	})
	dir, _ := mustLoad(t, linked, "")
	sameImage(t, dir, img)
}

// An index of which the tarball holds no manifest at all is refused; so is
// an oci-layout file of another version.
func TestOCIErrors(t *testing.T) {
	ii, _ := index(t)
	exported := ctrExport(t, ii, "docker.io/library/multi:1.0")
	im, _ := ii.IndexManifest()
	wantError(t, edit(t, exported, func(e entry) []entry {
		for _, m := range im.Manifests {
			if path.Base(e.hdr.Name) == m.Digest.Hex {
				return nil
			}
		}
		return keep(e)
	}), "", "holds none of the 2 manifests")
	wantError(t, edit(t, exported, func(e entry) []entry {
		if e.hdr.Name == "oci-layout" {
			e.body = []byte(`{"imageLayoutVersion":"2.0.0"}`)
		}
		return keep(e)
	}), "", "oci-layout is not an image layout of version 1.0.0")
}

func TestOCISelect(t *testing.T) {
	a, b := image(t, "linux", "amd64"), image(t, "linux", "arm64")
	data := ctrExportMany(t, map[string]v1.Image{"docker.io/library/a:1": a, "docker.io/team/b:2": b})
	wantError(t, data, "", "holds 2 images", "docker.io/library/a:1", "docker.io/team/b:2")
	wantError(t, data, "c:3", `holds no image "c:3"`, "docker.io/library/a:1", "docker.io/team/b:2")
	dir, _ := mustLoad(t, data, "team/b:2")
	sameImage(t, dir, b)
	ad, _ := a.Digest()
	dir, _ = mustLoad(t, data, ad.String())
	sameImage(t, dir, a)
}
