package devmapper

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// A fake sysfs and devtmpfs, laid out as the kernel lays them out: real
// directories, files and symlinks that the code under test reads.
type fakeKernel struct {
	t        *testing.T
	sys, dev string
}

func newFakeKernel(t *testing.T) *fakeKernel {
	root := t.TempDir()
	k := &fakeKernel{t: t, sys: filepath.Join(root, "sys"), dev: filepath.Join(root, "dev")}
	k.mkdir(k.sys, "block")
	k.mkdir(k.sys, "dev", "block")
	k.mkdir(k.dev, "mapper")
	k.write(filepath.Join(k.dev, "mapper", "control"), "") // a char device in the real /dev
	return k
}

func (k *fakeKernel) mkdir(parts ...string) string {
	p := filepath.Join(parts...)
	if err := os.MkdirAll(p, 0o755); err != nil {
		k.t.Fatal(err)
	}
	return p
}

func (k *fakeKernel) write(p, content string) {
	k.mkdir(filepath.Dir(p))
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		k.t.Fatal(err)
	}
}

func (k *fakeKernel) symlink(target, p string) {
	k.mkdir(filepath.Dir(p))
	if err := os.Symlink(target, p); err != nil {
		k.t.Fatal(err)
	}
}

// device adds a block device kernel with number dev under
// devices/virtual/block, with /sys/block, /sys/dev/block and its /dev node.
func (k *fakeKernel) device(kernel, dev string) string {
	p := k.mkdir(k.sys, "devices", "virtual", "block", kernel)
	k.write(filepath.Join(p, "dev"), dev+"\n")
	k.symlink(filepath.Join("..", "devices", "virtual", "block", kernel), filepath.Join(k.sys, "block", kernel))
	k.symlink(filepath.Join("..", "..", "devices", "virtual", "block", kernel), filepath.Join(k.sys, "dev", "block", dev))
	k.write(filepath.Join(k.dev, kernel), "")
	return p
}

// loop adds a loop device over file.
func (k *fakeKernel) loop(kernel, dev, file string) {
	p := k.device(kernel, dev)
	k.write(filepath.Join(p, "loop", "backing_file"), file+"\n")
}

// dm adds a dm device named name over the loop device slave ("" for none).
func (k *fakeKernel) dm(kernel, dev, name, slave string) {
	p := k.device(kernel, dev)
	k.write(filepath.Join(p, "dm", "name"), name+"\n")
	k.mkdir(p, "slaves")
	if slave != "" {
		k.symlink(filepath.Join("..", "..", slave), filepath.Join(p, "slaves", slave))
		k.symlink(filepath.Join("..", "..", kernel), filepath.Join(k.sys, "devices", "virtual", "block", slave, "holders", kernel))
	}
}

// removeDevice takes kernel out of sysfs and /dev, as the kernel does.
func (k *fakeKernel) removeDevice(kernel, dev string) {
	for _, p := range []string{
		filepath.Join(k.sys, "devices", "virtual", "block", kernel),
		filepath.Join(k.sys, "block", kernel),
		filepath.Join(k.sys, "dev", "block", dev),
		filepath.Join(k.dev, kernel),
	} {
		if err := os.RemoveAll(p); err != nil {
			k.t.Fatal(err)
		}
	}
}

func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.InfoLevel)
	return zap.New(core), logs
}

// fieldsOf is the string fields of a log entry.
func fieldsOf(e observer.LoggedEntry) map[string]string {
	out := make(map[string]string)
	for k, v := range e.ContextMap() {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}
