package devmapper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// linker keeps dev/mapper in step with the dm devices that sysfs at sys
// shows. known holds what was last linked and logged, by kernel name.
type linker struct {
	sys, dev string
	logger   *zap.Logger
	known    map[string]Device
	registry *Registry
}

func newLinker(sys, dev string, logger *zap.Logger, registry *Registry) *linker {
	return &linker{sys: sys, dev: dev, logger: logger, known: make(map[string]Device), registry: registry}
}

func (l *linker) mapper() string { return filepath.Join(l.dev, "mapper") }

// validName refuses a dm name that cannot be a file name in /dev/mapper, or
// would replace its control node.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && name != "control" && !strings.Contains(name, "/")
}

// handle acts on one uevent: a dm device added or changed is linked (on
// "add" its dm/ directory may not be there yet; the "change" of its first
// resume follows, and that is what go-dmverity waits for), a removed one
// unlinked.
func (l *linker) handle(ev Uevent) {
	kernel := ev.dmDevice()
	if kernel == "" {
		return
	}
	switch ev.Action {
	case "add", "change":
		if err := l.update(kernel); err != nil && ev.Action == "change" {
			l.logger.Warn("failed to link a device-mapper device", zap.String("device", kernel), zap.Error(err))
		}
	case "remove":
		l.remove(kernel)
	}
}

// update links the dm device kernel under its name and logs it when it is
// new or has changed (a rename, a table with another loop device).
func (l *linker) update(kernel string) error {
	d, err := describeDM(l.sys, kernel)
	if err != nil {
		return err
	}
	if !validName(d.Name) {
		return fmt.Errorf("dm device %s has name %q, which cannot be linked in %s", kernel, d.Name, l.mapper())
	}
	if err := l.link(d.Name, kernel); err != nil {
		return err
	}
	old, ok := l.known[kernel]
	if ok && old == d {
		return nil
	}
	if ok && old.Name != d.Name {
		l.unlink(old.Name, kernel)
	}
	l.known[kernel] = d
	l.registry.add(d)
	l.logger.Info("device-mapper device linked", append(d.fields(), zap.String("link", filepath.Join(l.mapper(), d.Name)))...)
	return nil
}

// link makes mapper/name -> ../kernel, replacing a link to elsewhere in one
// rename so that a reader never sees it missing.
func (l *linker) link(name, kernel string) error {
	p := filepath.Join(l.mapper(), name)
	target := filepath.Join("..", kernel)
	if cur, err := os.Readlink(p); err == nil && cur == target {
		return nil
	}
	if err := os.MkdirAll(l.mapper(), 0o755); err != nil {
		return fmt.Errorf("failed to create %s: %w", l.mapper(), err)
	}
	tmp := filepath.Join(l.mapper(), "."+name+".new")
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("failed to link %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("failed to link %s: %w", p, err)
	}
	return nil
}

// unlink removes mapper/name if it links to kernel.
func (l *linker) unlink(name, kernel string) {
	p := filepath.Join(l.mapper(), name)
	if cur, err := os.Readlink(p); err != nil || cur != filepath.Join("..", kernel) {
		return
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		l.logger.Warn("failed to remove a /dev/mapper link", zap.String("link", p), zap.Error(err))
	}
}

// remove unlinks the dm device kernel, gone from the kernel.
func (l *linker) remove(kernel string) {
	for name, k := range l.links() {
		if k == kernel {
			l.unlink(name, kernel)
		}
	}
	if d, ok := l.known[kernel]; ok {
		delete(l.known, kernel)
		l.logger.Info("device-mapper device removed", zap.String("name", d.Name), zap.String("device", kernel), zap.String("dev", d.Dev))
	}
}

// links are the links in mapper to dm devices: name -> kernel name.
func (l *linker) links() map[string]string {
	out := make(map[string]string)
	entries, _ := os.ReadDir(l.mapper())
	for _, e := range entries {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		target, err := os.Readlink(filepath.Join(l.mapper(), e.Name()))
		if k, ok := strings.CutPrefix(target, "../"); err == nil && ok && strings.HasPrefix(k, "dm-") {
			out[e.Name()] = k
		}
	}
	return out
}

// sync links every dm device sysfs shows and removes the links of devices
// that are gone or renamed: at start, and when uevents were lost.
func (l *linker) sync() {
	present := make(map[string]bool)
	entries, err := os.ReadDir(filepath.Join(l.sys, "block"))
	if err != nil {
		l.logger.Error("failed to list block devices", zap.String("dir", filepath.Join(l.sys, "block")), zap.Error(err))
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "dm-") {
			continue
		}
		if err := l.update(e.Name()); err != nil {
			l.logger.Warn("failed to link a device-mapper device", zap.String("device", e.Name()), zap.Error(err))
			continue
		}
		present[e.Name()] = true
	}
	for name, kernel := range l.links() {
		if !present[kernel] || l.known[kernel].Name != name {
			l.unlink(name, kernel)
		}
	}
	for kernel := range l.known {
		if !present[kernel] {
			l.remove(kernel)
		}
	}
}
