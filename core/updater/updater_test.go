package updater

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/klauspost/compress/zstd"
	"go.uber.org/zap"

	buildverity "github.com/appliance-bundler/appliance/build/verity"
	"github.com/appliance-bundler/appliance/core/disklayout"
	"github.com/appliance-bundler/appliance/core/systemimage"
	"github.com/appliance-bundler/appliance/core/updatepayload"
	"github.com/appliance-bundler/appliance/core/updater/config"
	"github.com/appliance-bundler/appliance/core/updater/status"
)

func names(t *testing.T, e esp) []string {
	t.Helper()
	all, err := e.entries()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range all {
		out = append(out, en.Name())
	}
	slices.Sort(out)
	return out
}

func touch(t *testing.T, dir string, name string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("uki"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// An installed entry has one try; committing drops the counter; other
// files of the ESP are not entries.
func TestESPEntries(t *testing.T) {
	e := esp{dir: t.TempDir()}
	touch(t, e.dir, "appliance-1.efi")
	touch(t, e.dir, "README")
	if _, err := e.install("2", strings.NewReader("new uki")); err != nil {
		t.Fatal(err)
	}
	if got, want := names(t, e), []string{"appliance-1.efi", "appliance-2+1-0.efi"}; !slices.Equal(got, want) {
		t.Fatalf("entries %q, want %q", got, want)
	}
	en, ok, err := e.find("2")
	if err != nil || !ok || !en.Counted || en.TriesLeft != 1 {
		t.Fatalf("find(2) = %+v, %v, %v", en, ok, err)
	}
	if err := e.commit(en); err != nil {
		t.Fatal(err)
	}
	if got, want := names(t, e), []string{"appliance-1.efi", "appliance-2.efi"}; !slices.Equal(got, want) {
		t.Fatalf("after commit: entries %q, want %q", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "appliance-2.efi")); string(b) != "new uki" {
		t.Errorf("the committed entry holds %q", b)
	}
}

// healthAfter is healthy from a given uptime on.
type healthAfter struct {
	uptime *time.Duration
	at     time.Duration
}

func (h healthAfter) Check(context.Context) error {
	if *h.uptime < h.at {
		return errors.New("not yet")
	}
	return nil
}

// A system on trial commits when healthy in time, and reboots into the old
// one, recording itself failed, when not; the old system then reports it
// and removes its entry.
func TestAssess(t *testing.T) {
	for _, c := range []struct {
		name      string
		healthyAt time.Duration
		committed bool
	}{
		{"healthy in time", 40 * time.Second, true},
		{"never healthy", time.Hour, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := esp{dir: t.TempDir()}
			touch(t, e.dir, "appliance-1.efi")
			touch(t, e.dir, "appliance-2+0-1.efi") // booted once by systemd-boot
			var up time.Duration
			rebooted := make(chan struct{})
			u := Updater{
				Config:     config.Config{HealthTimeout: config.Duration(time.Minute)},
				Version:    "2",
				StatusPath: filepath.Join(t.TempDir(), "status.json"),
				Health:     healthAfter{&up, c.healthyAt},
				Uptime:     func() (time.Duration, error) { up += 10 * time.Second; return up, nil },
				Reboot:     func() error { close(rebooted); return nil },
				HealthPoll: time.Millisecond,
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if !c.committed {
				// The rollback waits for init to stop it.
				go func() {
					<-rebooted
					cancel()
				}()
			}
			st := status.Status{Version: "2", Slot: disklayout.SystemB}
			err := u.assess(ctx, zap.NewNop(), e, &st)
			if c.committed {
				if err != nil || st.Last.Result != status.ResultCommitted || !slices.Contains(names(t, e), "appliance-2.efi") {
					t.Fatalf("assess: %v; status %+v; entries %q", err, st.Last, names(t, e))
				}
				return
			}
			select {
			case <-rebooted:
			default:
				t.Fatal("not rebooted")
			}
			if st.Last.Result != status.ResultFailed || !st.HasFailed("2") || !strings.Contains(st.Last.Reason, "not healthy 1m0s after boot") {
				t.Fatalf("assess: %v, status %+v", err, st)
			}
			// The old system's boot: the entry has no tries left.
			old := u
			old.Version = "1"
			st = status.Status{Version: "1", Slot: disklayout.SystemA, Last: st.Last, Failed: st.Failed}
			if err := old.assess(t.Context(), zap.NewNop(), e, &st); err != nil {
				t.Fatal(err)
			}
			if got := names(t, e); !slices.Equal(got, []string{"appliance-1.efi"}) || !st.HasFailed("2") || st.Last.Result != status.ResultFailed {
				t.Errorf("after the rollback: entries %q, status %+v", got, st)
			}
		})
	}
}

// testSystem is a random data image with its hash tree appended, its
// info, and a payload manifest of it compressed.
func testSystem(t *testing.T) ([]byte, []byte, updatepayload.Manifest) {
	t.Helper()
	dir := t.TempDir()
	data := make([]byte, 64*systemimage.BlockSize)
	rand.Read(data)
	img := filepath.Join(dir, "system.img")
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tree, err := buildverity.Append(img, systemimage.BlockSize, uuid.NewSHA1(uuid.Nil, []byte("slot")))
	if err != nil {
		t.Fatal(err)
	}
	image, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	var z bytes.Buffer
	enc, _ := zstd.NewWriter(&z)
	enc.Write(image)
	enc.Close()
	isum, zsum := sha256.Sum256(image), sha256.Sum256(z.Bytes())
	m := updatepayload.Manifest{Format: updatepayload.Format, Version: "2", System: updatepayload.System{
		Info:       systemimage.Info{RootHash: tree.RootHash, HashOffset: tree.HashOffset, Size: int64(len(image))},
		SHA256:     hex.EncodeToString(isum[:]),
		Compressed: updatepayload.File{Size: int64(z.Len()), SHA256: hex.EncodeToString(zsum[:])},
	}}
	return image, z.Bytes(), m
}

// The system is written, checked as it streams and verified after; bytes
// that are not the manifest's are refused, naming the file.
func TestWriteSystem(t *testing.T) {
	image, compressed, m := testSystem(t)
	dev := filepath.Join(t.TempDir(), "slot")
	if err := os.WriteFile(dev, make([]byte, len(image)+1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	s := slot{name: disklayout.SystemB, dev: dev, size: int64(len(image) + 1<<20)}
	read, written, err := writeSystem(s, m, bytes.NewReader(compressed))
	if err != nil || read != int64(len(compressed)) || written != int64(len(image)) {
		t.Fatalf("writeSystem: %d read, %d written, %v", read, written, err)
	}
	if err := verifySlot(s, m.System.Info); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(compressed)
	bad[len(bad)/2] ^= 1
	if _, _, err := writeSystem(s, m, bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "does not match the manifest") && !strings.Contains(err.Error(), "failed") {
		t.Errorf("changed bytes: %v", err)
	}
	other := m
	other.System.RootHash = strings.Repeat("0", 64)
	if err := verifySlot(s, other.System.Info); err == nil {
		t.Error("the slot verified against another root hash")
	}
	small := s
	small.size = 4096
	if _, _, err := writeSystem(small, m, bytes.NewReader(compressed)); err == nil || !strings.Contains(err.Error(), "more than slot") {
		t.Errorf("a slot too small: %v", err)
	}
}

// Both sources serve a payload's files, and tell a missing payload apart.
func TestSources(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, updatepayload.ManifestFile), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	for _, src := range []source{newSource(dir), newSource(srv.URL + "/")} {
		b, err := readSmall(t.Context(), src, updatepayload.ManifestFile, 100)
		if err != nil || string(b) != "{}" {
			t.Errorf("%T: %q, %v", src, b, err)
		}
		if _, err := src.open(t.Context(), updatepayload.SignatureFile); !errors.Is(err, errNoPayload) {
			t.Errorf("%T: a missing file: %v, want errNoPayload", src, err)
		}
		if _, err := readSmall(t.Context(), src, updatepayload.ManifestFile, 1); err == nil {
			t.Errorf("%T: a file over the limit was read", src)
		}
	}
}
