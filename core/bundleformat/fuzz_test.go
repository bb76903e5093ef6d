package bundleformat_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// FuzzReadMetadata feeds tar streams to the metadata reader: real bundles
// the project's writer makes (a single image and a two-platform index) and
// pieces of them, each with one splice, bytes [off, off+cut) replaced by
// patch. The reader must never panic, nor allocate far beyond what it is
// given, and whatever it accepts must hold up against an independent check.
//
// Why a splice rather than the whole tar as the fuzzed bytes: Go minimizes
// every input that finds new coverage, for up to -fuzzminimizetime, by
// trying candidates quadratic in the input's length. On multi-kilobyte tars
// that always runs out the time, so a short run did almost nothing but
// minimize (21 execs in 20 s). Only patch is minimized here, and it stays
// small, while off and cut still reach every header field and entry.
func FuzzReadMetadata(f *testing.F) {
	bases := fuzzBases(f)
	for i := range bases {
		f.Add(uint8(i), uint16(0), uint16(0), []byte{})
	}
	// The first header's name, and the index.json header's size field.
	f.Add(uint8(0), uint16(0), uint16(10), []byte("index.json"))
	f.Add(uint8(0), uint16(1024+124), uint16(11), []byte("00000000777"))
	// The narrowed bundle's platforms: one it left out, one the index lacks.
	narrowed := len(bases) - 3
	at := bytes.Index(bases[narrowed], []byte("linux/arm64\""))
	if at < 0 {
		f.Fatal("the narrowed bundle names no platform")
	}
	f.Add(uint8(narrowed), uint16(at), uint16(11), []byte("linux/amd64"))
	f.Add(uint8(narrowed), uint16(at), uint16(11), []byte("linux/s390x"))
	f.Fuzz(func(t *testing.T, base uint8, off, cut uint16, patch []byte) {
		data := splice(bases[int(base)%len(bases)], int(off), int(cut), patch)
		// Also with the header checksums made right, so that a mutated
		// header (name, type, size) reaches the reader's own checks
		// instead of stopping at archive/tar's checksum.
		for _, in := range [][]byte{data, fixChecksums(data)} {
			for _, p := range []bundleformat.Policy{{}, {Platform: platform{"linux", "amd64"}}} {
				m, err := readBounded(t, in, p)
				if err == nil {
					checkAccepted(t, in, m)
				}
			}
		}
	})
}

// readBounded reads a bundle and fails the test if that allocated far
// beyond the input's size: JSON decoding and error text need some memory
// per input byte, a header's claim must not add to it. The heap counter is
// the process's: a first use's lazy set-up or the fuzzing worker's own
// allocations can pass the bound once, so only a second read over it
// fails.
func readBounded(t *testing.T, in []byte, p bundleformat.Policy) (*bundleformat.Metadata, error) {
	var m *bundleformat.Metadata
	var err error
	bound := maxFuzzAlloc + 64*uint64(len(in))
	if allocated(func() { m, err = read(t, in, p) }) <= bound {
		return m, err
	}
	if n := allocated(func() { m, err = read(t, in, p) }); n > bound {
		t.Fatalf("reading %d bytes allocated %d bytes, twice over %d (error: %v)", len(in), n, bound, err)
	}
	return m, err
}

// maxFuzzAlloc is what FuzzReadMetadata lets one read allocate beyond an
// amount in proportion to its input.
const maxFuzzAlloc = 256 << 10

// fuzzBases are the tars FuzzReadMetadata splices: three real bundles (a
// single image, a two-platform index, that index narrowed to arm64), and
// of each its first three entries and its layout, index and last entry.
func fuzzBases(t testing.TB) [][]byte {
	var out [][]byte
	index := indexLayout(t)
	for _, b := range [][]byte{realBundle(t, singleLayout(t), "hello:1.0"), realBundle(t, index, "localhost/multi:2"),
		realBundle(t, index, "localhost/multi:2", "linux/arm64")} {
		es := entries(t, b)
		out = append(out, b, pack(t, es[:3]), pack(t, []entry{es[0], es[1], es[len(es)-1]}))
	}
	return out
}

// splice returns b with bytes [off, off+cut) replaced by patch, off and cut
// clamped to b.
func splice(b []byte, off, cut int, patch []byte) []byte {
	off = min(off, len(b))
	cut = min(cut, len(b)-off)
	out := make([]byte, 0, len(b)-cut+len(patch))
	return append(append(append(out, b[:off]...), patch...), b[off+cut:]...)
}

// fixChecksums returns a copy of a tar with the checksum of every header
// it can find (following the octal size fields) recomputed.
func fixChecksums(data []byte) []byte {
	b := append([]byte{}, data...)
	for pos := 0; pos+512 <= len(b); {
		h := b[pos : pos+512]
		if bytes.Equal(h, make([]byte, 512)) {
			break
		}
		copy(h[148:156], "        ")
		var sum int64
		for _, c := range h {
			sum += int64(c)
		}
		copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
		size, err := strconv.ParseInt(strings.TrimRight(strings.TrimLeft(string(h[124:136]), " 0"), " \x00"), 8, 64)
		if strings.Trim(string(h[124:136]), " 0\x00") == "" {
			size, err = 0, nil
		}
		if err != nil || size < 0 || size > int64(len(b)) {
			break
		}
		pos += 512 + int((size+511)/512*512)
	}
	return b
}

// allowedNames is the format's entry naming rule, restated independently
// of the package under test.
const allowedNames = `^(oci-layout|index\.json|blobs/sha256/[0-9a-f]{64})$`

// checkAccepted checks an accepted bundle without the package's own code:
// every JSON blob returned has its digest; every entry up to the last one
// those blobs needed is a regular file with an allowed name; the first two
// are oci-layout and the index.json returned.
func checkAccepted(t *testing.T, data []byte, m *bundleformat.Metadata) {
	need := map[string]bool{}
	for d, b := range m.JSON {
		if sum := sha256.Sum256(b); d.String() != "sha256:"+hex.EncodeToString(sum[:]) {
			t.Fatalf("blob %s returned with content of another digest", d)
		}
		need[d.Encoded()] = true
	}
	if len(m.Images) == 0 {
		t.Fatal("accepted a bundle naming no image")
	}
	checkNarrowed(t, m)
	allowed := regexp.MustCompile(allowedNames)
	tr := tar.NewReader(bytes.NewReader(data))
	for i := 0; i < 2 || len(need) > 0; i++ {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("accepted, but entry %d cannot be read (%v) with blobs %v not seen", i, err, need)
		}
		if !allowed.MatchString(hdr.Name) || (hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA) { //nolint:staticcheck // TypeRegA is a regular file
			t.Fatalf("accepted a bundle whose entry %d is %q of type %q", i, hdr.Name, hdr.Typeflag)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("accepted, but entry %q cannot be read: %v", hdr.Name, err)
		}
		checkPlace(t, i, hdr.Name, b, m)
		sum := sha256.Sum256(b)
		if h := hex.EncodeToString(sum[:]); hdr.Name == bundleformat.BlobPrefix+h {
			delete(need, h)
		}
	}
}

// checkNarrowed checks that an image whose index.json descriptor lists
// platforms was followed only into manifests of those platforms.
func checkNarrowed(t *testing.T, m *bundleformat.Metadata) {
	for _, im := range m.Images {
		v, ok := im.Target.Annotations[bundleformat.AnnotationPlatforms]
		if !ok {
			continue
		}
		listed := strings.Split(v, ",")
		for _, mf := range im.Manifests {
			p := mf.Descriptor.Platform
			if p == nil || !slices.Contains(listed, bundleformat.FormatPlatform(*p)) {
				t.Fatalf("image %s narrowed to %q followed manifest %s of platform %v", im.Name, v, mf.Descriptor.Digest, p)
			}
		}
	}
}

// checkPlace checks that the first two entries are the layout and index.
func checkPlace(t *testing.T, i int, name string, b []byte, m *bundleformat.Metadata) {
	switch i {
	case 0:
		var l struct {
			Version string `json:"imageLayoutVersion"`
		}
		if name != "oci-layout" || json.Unmarshal(b, &l) != nil || l.Version != "1.0.0" {
			t.Fatalf("accepted a bundle whose first entry is %q: %q", name, b)
		}
	case 1:
		if name != "index.json" || !bytes.Equal(b, m.Index) {
			t.Fatalf("accepted a bundle whose second entry is %q, returning another index.json", name)
		}
	}
}

// FuzzParseManifest feeds JSON to the preseed manifest parser, seeded with
// a real manifest the project's writer makes. What it accepts must be
// complete and encode to a manifest it accepts again, unchanged.
func FuzzParseManifest(f *testing.F) {
	f.Add(realManifest(f))
	f.Add(withCachedLayer(f, realManifest(f), func(map[string]any) {}))
	f.Add([]byte(`{"bundles": []}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := bundleformat.ParseManifest(data)
		if err != nil {
			return
		}
		keys := map[string]bool{}
		for i := range m.Bundles {
			e := &m.Bundles[i]
			if err := e.Validate(); err != nil {
				t.Fatalf("accepted an invalid entry: %v", err)
			}
			if keys[e.Key()] || keys[e.Path] {
				t.Fatalf("accepted %s twice", e.Key())
			}
			keys[e.Key()], keys[e.Path] = true, true
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		again, err := bundleformat.ParseManifest(enc)
		if err != nil {
			t.Fatalf("its own encoding is refused: %v\n%s", err, enc)
		}
		if enc2, _ := again.Encode(); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\n%s\n%s", enc, enc2)
		}
	})
}

// fixChecksums keeps a real bundle readable, and makes a header changed in
// place readable again: the fuzz target's second input is worth having.
func TestFixChecksums(t *testing.T) {
	b := realBundle(t, singleLayout(t), "hello:1.0")
	if _, err := read(t, fixChecksums(b), bundleformat.Policy{}); err != nil {
		t.Fatalf("a real bundle with its checksums recomputed: %v", err)
	}
	broken := append([]byte{}, b...)
	copy(broken[0:10], "oci-layoux") // the first header's name
	if _, err := read(t, broken, bundleformat.Policy{}); err == nil || !strings.Contains(err.Error(), "broken tar") {
		t.Fatalf("a changed header without its checksum: want broken tar, got %v", err)
	}
	if _, err := read(t, fixChecksums(broken), bundleformat.Policy{}); err == nil || !strings.Contains(err.Error(), "unexpected entry") {
		t.Fatalf("a changed header with its checksum: want the reader's own error, got %v", err)
	}
}
