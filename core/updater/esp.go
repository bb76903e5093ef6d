package updater

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/appliance-bundler/appliance/core/disklayout"
)

// esp is the mounted EFI system partition's boot entries
// (disklayout.EntryDir): one UKI a system slot, named by version and boot
// counter (disklayout.Entry), which systemd-boot picks from.
type esp struct{ dir string }

// entries lists the UKIs of EntryDir.
func (e esp) entries() ([]disklayout.Entry, error) {
	des, err := os.ReadDir(e.dir)
	if err != nil {
		return nil, fmt.Errorf("failed to list the boot entries in %s: %w", e.dir, err)
	}
	var out []disklayout.Entry
	for _, de := range des {
		if en, ok := disklayout.ParseEntry(de.Name()); ok && de.Type().IsRegular() {
			out = append(out, en)
		}
	}
	return out, nil
}

// find is the entry of version, if any.
func (e esp) find(version string) (disklayout.Entry, bool, error) {
	all, err := e.entries()
	if err != nil {
		return disklayout.Entry{}, false, err
	}
	for _, en := range all {
		if en.Version == version {
			return en, true, nil
		}
	}
	return disklayout.Entry{}, false, nil
}

func (e esp) path(en disklayout.Entry) string { return filepath.Join(e.dir, en.Name()) }

// commit drops en's boot counter: systemd-boot boots it by default from
// now on (it is the newest).
func (e esp) commit(en disklayout.Entry) error {
	done := disklayout.Entry{Version: en.Version}
	if err := os.Rename(e.path(en), e.path(done)); err != nil {
		return fmt.Errorf("failed to commit the boot entry %s: %w", en.Name(), err)
	}
	return e.sync()
}

// remove deletes en.
func (e esp) remove(en disklayout.Entry) error {
	if err := os.Remove(e.path(en)); err != nil {
		return fmt.Errorf("failed to remove the boot entry %s: %w", en.Name(), err)
	}
	return e.sync()
}

// install writes uki as version's entry with one boot try: systemd-boot
// boots it next, as the newest entry with tries left, and counts the try
// down to none as it does; unless the system commits it, it is then the
// last choice and the old entry boots again. It is written under a
// temporary name first: a cut of power leaves no entry half-written.
func (e esp) install(version string, uki io.Reader) (int64, error) {
	tmp := filepath.Join(e.dir, ".new.tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, fmt.Errorf("failed to create %s: %w", tmp, err)
	}
	n, err := io.Copy(f, uki)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	en := disklayout.Entry{Version: version, Counted: true, TriesLeft: 1}
	if err == nil {
		err = os.Rename(tmp, e.path(en))
	}
	if err != nil {
		os.Remove(tmp)
		return n, fmt.Errorf("failed to write the boot entry %s: %w", en.Name(), err)
	}
	return n, e.sync()
}

// sync flushes the ESP's file system: FAT has no journal, so each change
// is on disk before the next step counts on it.
func (e esp) sync() error {
	f, err := os.Open(e.dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("failed to sync the ESP: %w", err)
	}
	return nil
}
