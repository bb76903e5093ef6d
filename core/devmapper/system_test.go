package devmapper

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	erofs "github.com/erofs/go-erofs"

	"github.com/appliance-bundler/appliance/core/erofsmap"
	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/tests/erofstest"
)

// firstBlock is the block of img where name's data starts (at a block's
// start: go-erofs writes data blocks whole).
func firstBlock(t *testing.T, img []byte, name string) uint64 {
	t.Helper()
	fsys, err := erofs.Open(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := erofsmap.Ranges(fsys, name)
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Offset%systemimage.BlockSize != 0 {
		t.Fatalf("%s starts at byte %d, within a block", name, rs[0].Offset)
	}
	return uint64(rs[0].Offset / systemimage.BlockSize)
}

// A corrupted block of the system partition (the kernel names the slot's
// partition, under the "system" dm device) is logged with the file of the
// system that holds it; in a layer blob of the cache, with the layer's
// diffID and the file of the layer too.
func TestSystemCorruptionNamesTheFile(t *testing.T) {
	k := newFakeKernel(t)
	k.device("vda2", "254:2")
	k.dm("dm-0", "253:0", systemimage.DeviceName, "vda2")
	blobPath := "/containerd/erofs-cache/sha256/9c/" + hexID + ".erofs"
	blob := erofstest.Write(t, map[string][]byte{"/hello": bytes.Repeat([]byte("hello "), 3000)})
	sys := erofstest.Write(t, map[string][]byte{
		"/usr/bin/tool": bytes.Repeat([]byte("tool "), 3000),
		blobPath:        blob,
	})
	k.write(filepath.Join(k.dev, "dm-0"), string(sys))
	root := t.TempDir()
	k.write(filepath.Join(root, filepath.FromSlash(blobPath)), string(blob))
	v := VerityLog{Sys: k.sys, Dev: k.dev, Root: root, System: systemimage.DeviceName}

	// The second block of each file.
	tool := firstBlock(t, sys, "usr/bin/tool") + 1
	hello := firstBlock(t, sys, blobPath[1:]) + firstBlock(t, blob, "hello") + 1
	logger, logs := observed()
	for i, b := range []uint64{tool, hello, 0} {
		v.handle(logger, []byte(fmt.Sprintf("3,%d,200,-;device-mapper: verity: 254:2: data block %d is corrupted\n", 10+i, b)), -1)
	}
	lines := logs.FilterMessage("dm-verity: corrupted block in the system partition").All()
	if len(lines) != 3 || logs.Len() != 3 {
		t.Fatalf("logged %v, want three lines of the system partition", logs.All())
	}
	toolLine, helloLine, super := lines[0].ContextMap(), lines[1].ContextMap(), lines[2].ContextMap()
	if toolLine["file"] != "/usr/bin/tool" || toolLine["file_offset"] != int64(systemimage.BlockSize) || toolLine["name"] != systemimage.DeviceName {
		t.Errorf("tool's block: %v", toolLine)
	}
	if helloLine["file"] != blobPath || helloLine["diff_id"] != "sha256:"+hexID ||
		helloLine["layer_file"] != "/hello" || helloLine["layer_file_offset"] != int64(systemimage.BlockSize) {
		t.Errorf("hello's block: %v", helloLine)
	}
	if _, ok := super["locate_error"]; !ok || super["file"] != nil {
		t.Errorf("block 0 (the superblock) named a file: %v", super)
	}
}
