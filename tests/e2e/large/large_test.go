// Package large_test boots the E2E appliance whose preseeded image holds
// more incompressible data (1 GiB) than the guest has memory (768 MiB): the
// image's layer lies in the EROFS cache on the system partition and is
// read from the disk through dm-verity, never held in memory. A pod reads
// the whole blob and must print the sha256 the build computed.
package large_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/appliance-bundler/appliance/tests/e2e/node"
	"github.com/appliance-bundler/appliance/tests/runfile"
)

const (
	largeImage = "docker.io/library/large:1.0"
	// blobSize is //tests/e2e/large:data_layer's -size.
	blobSize = 1 << 30
	// memoryMiB is the guest's memory: less than the blob.
	memoryMiB = 768
	// diskSize holds slot A, slot B of its size and the smallest data
	// partition.
	diskSize = 5 << 30
)

func TestImageLargerThanMemory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	want, err := os.ReadFile(runfile.Path(t, "BLOB_SHA256"))
	if err != nil {
		t.Fatal(err)
	}
	n := node.BootWith(ctx, t, node.Extra{MemoryMiB: memoryMiB, DiskSize: diskSize})
	st := n.PreseedStatus(ctx)
	t.Logf("preseed done %s after QEMU start: imported %d, failed %d, %d bytes read", n.Since(), st.Imported, st.Failed, st.Bytes)
	if st.Imported != 2 || st.Failed != 0 {
		t.Fatalf("preseed imported %d and failed %d, want 2 and 0: %+v", st.Imported, st.Failed, st.Bundles)
	}
	total, _, err := n.Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int64(total)*1024 >= blobSize {
		t.Fatalf("the guest has %d kB of memory, not less than the %d-byte blob", total, blobSize)
	}
	line := "sha256 " + strings.TrimSpace(string(want))
	exit, log := n.RunPod(ctx, t, "large", largeImage, line)
	if exit != 0 {
		t.Fatalf("the large pod exited with %d; log: %s", exit, log)
	}
	_, avail, err := n.Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the pod read the %d-byte blob, %s after QEMU start, in a guest of %d kB (%d kB available after): %s",
		blobSize, n.Since(), total, avail, strings.TrimSpace(log))
}
