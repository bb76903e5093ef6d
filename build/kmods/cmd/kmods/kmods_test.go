package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/appliance-bundler/appliance/tests/runfile"
)

// modulesTar is //third_party/linux:modules, the appliance's real selection.
func modulesTar(t *testing.T) map[string][]byte {
	t.Helper()
	p := runfile.Path(t, "MODULES_TAR")
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("failed to open %s: %v", p, err)
	}
	defer f.Close()
	files := make(map[string][]byte)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("failed to read %s: %v", p, err)
		}
		if h.Typeflag == tar.TypeReg {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("failed to read %s from %s: %v", h.Name, p, err)
			}
			files[h.Name] = data
		}
	}
}

func release(t *testing.T, files map[string][]byte) string {
	t.Helper()
	for name := range files {
		if rest, ok := strings.CutPrefix(name, "lib/modules/"); ok {
			return strings.SplitN(rest, "/", 2)[0]
		}
	}
	t.Fatal("no lib/modules/<release>/ in the tar")
	return ""
}

// The selection holds the requested modules, their dependencies (bridge
// needs stp and llc), decompressed ELF files, and a modules.dep that lists
// every dependency of every module.
func TestApplianceSelectionIsComplete(t *testing.T) {
	files := modulesTar(t)
	rel := release(t, files)
	base := "lib/modules/" + rel + "/"
	dep := string(files[base+"modules.dep"])
	want := map[string][]string{
		"kernel/net/bridge/br_netfilter.ko": {"kernel/net/bridge/bridge.ko", "kernel/net/802/stp.ko", "kernel/net/llc/llc.ko"},
		"kernel/net/bridge/bridge.ko":       {"kernel/net/802/stp.ko", "kernel/net/llc/llc.ko"},
		"kernel/fs/overlayfs/overlay.ko":    nil,
		"kernel/drivers/net/virtio_net.ko":  {"kernel/drivers/net/net_failover.ko", "kernel/net/core/failover.ko"},
	}
	lines := make(map[string][]string)
	for _, l := range strings.Split(strings.TrimSpace(dep), "\n") {
		mod, deps, ok := strings.Cut(l, ":")
		if !ok {
			t.Fatalf("modules.dep line %q has no colon", l)
		}
		lines[mod] = strings.Fields(deps)
		if _, ok := files[base+mod]; !ok {
			t.Errorf("modules.dep names %s, which is not in the tar", mod)
		}
		for _, d := range lines[mod] {
			if _, ok := files[base+d]; !ok {
				t.Errorf("%s depends on %s, which is not in the tar", mod, d)
			}
		}
	}
	for mod, deps := range want {
		got, ok := lines[mod]
		if !ok {
			t.Errorf("modules.dep lacks %s", mod)
			continue
		}
		if strings.Join(got, " ") != strings.Join(deps, " ") {
			t.Errorf("%s depends on %v, want %v", mod, got, deps)
		}
		if !bytes.HasPrefix(files[base+mod], []byte("\x7fELF")) {
			t.Errorf("%s is not a decompressed ELF file", mod)
		}
	}
	conf := string(files["etc/modules-load.d/appliance.conf"])
	for _, m := range []string{"overlay", "br_netfilter", "virtio_net"} {
		if !strings.Contains(conf, m+"\n") {
			t.Errorf("modules-load.d conf lacks %s: %q", m, conf)
		}
	}
}

// A dependency missing from the tree is an error naming both modules.
func TestMissingDependencyIsNamed(t *testing.T) {
	files := modulesTar(t)
	rel := release(t, files)
	dir := filepath.Join(t.TempDir(), rel)
	for name, data := range files {
		rest, ok := strings.CutPrefix(name, "lib/modules/"+rel+"/")
		if !ok || rest == "kernel/net/llc/llc.ko" {
			continue
		}
		p := filepath.Join(dir, rest)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := run(dir, filepath.Join(t.TempDir(), "out.tar"), []string{"bridge"})
	if err == nil || !strings.Contains(err.Error(), "module llc (needed by stp) is not in the kernel's modules") {
		t.Fatalf("run = %v, want an error naming llc and stp", err)
	}
	err = run(dir, filepath.Join(t.TempDir(), "out.tar"), []string{"no_such_module"})
	if err == nil || !strings.Contains(err.Error(), "module no_such_module is not in the kernel's modules") {
		t.Fatalf("run = %v, want an error naming no_such_module", err)
	}
}

// The same inputs give the same bytes.
func TestDeterministic(t *testing.T) {
	files := modulesTar(t)
	rel := release(t, files)
	dir := filepath.Join(t.TempDir(), rel)
	for name, data := range files {
		rest, ok := strings.CutPrefix(name, "lib/modules/"+rel+"/")
		if !ok || !strings.HasPrefix(rest, "kernel/") {
			continue
		}
		p := filepath.Join(dir, rest)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var outs [][]byte
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "out.tar")
		if err := run(dir, out, []string{"br_netfilter", "overlay"}); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, data)
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("two runs over the same modules gave different tars")
	}
}
