// Command kmods selects kernel modules for the initramfs: given the modules
// tree of a kernel package and the names of the modules the appliance needs,
// it resolves their dependencies from each module's .modinfo "depends" field
// (what modpost recorded when the kernel was built, and what depmod reads
// too), decompresses them, and writes a deterministic tar holding
// lib/modules/<release>/{kernel/...ko, modules.dep} and
// etc/modules-load.d/appliance.conf naming the requested modules.
//
// It does this itself rather than running depmod because depmod is not part
// of the build's inputs; it must not guess a dependency it cannot read from
// the modules themselves.
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ulikunitz/xz"
)

// module is one kernel module file of the tree.
type module struct {
	name    string // canonical name: basename without .ko*, '-' as '_'
	relPath string // below lib/modules/<release>/, with .ko (decompressed)
	srcPath string
}

// canonical is the kernel's notion of a module name: '-' and '_' are equal.
func canonical(name string) string { return strings.ReplaceAll(name, "-", "_") }

// scan indexes every module below dir (lib/modules/<release>).
func scan(dir string) (map[string]module, error) {
	mods := make(map[string]module)
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		base := d.Name()
		var stem string
		switch {
		case strings.HasSuffix(base, ".ko.xz"):
			stem = strings.TrimSuffix(base, ".ko.xz")
		case strings.HasSuffix(base, ".ko"):
			stem = strings.TrimSuffix(base, ".ko")
		default:
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(filepath.Join(filepath.Dir(rel), stem+".ko"))
		m := module{name: canonical(stem), relPath: rel, srcPath: path}
		if prev, ok := mods[m.name]; ok {
			return fmt.Errorf("module %s found twice: %s and %s", m.name, prev.srcPath, path)
		}
		mods[m.name] = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to scan modules in %s: %w", dir, err)
	}
	return mods, nil
}

// load returns the module's ELF bytes, decompressed.
func load(m module) ([]byte, error) {
	raw, err := os.ReadFile(m.srcPath)
	if err != nil {
		return nil, fmt.Errorf("failed to read module %s: %w", m.srcPath, err)
	}
	if !strings.HasSuffix(m.srcPath, ".xz") {
		return raw, nil
	}
	r, err := xz.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("failed to decompress module %s: %w", m.srcPath, err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("failed to decompress module %s: %w", m.srcPath, err)
	}
	return out, nil
}

// depends reads the "depends=" entry of the module's .modinfo section.
func depends(m module, elfBytes []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(elfBytes))
	if err != nil {
		return nil, fmt.Errorf("module %s is not an ELF file: %w", m.srcPath, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s has no .modinfo section", m.srcPath)
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("failed to read .modinfo of %s: %w", m.srcPath, err)
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("depends="))
		if !ok {
			continue
		}
		var deps []string
		for _, d := range strings.Split(string(v), ",") {
			if d != "" {
				deps = append(deps, canonical(d))
			}
		}
		return deps, nil
	}
	return nil, nil
}

// resolved is the closure of the requested modules.
type resolved struct {
	order []module            // dependencies before dependents
	deps  map[string][]string // name -> direct dependencies
	data  map[string][]byte   // name -> decompressed module
}

func resolve(mods map[string]module, want []string) (*resolved, error) {
	r := &resolved{deps: make(map[string][]string), data: make(map[string][]byte)}
	const (
		visiting = 1
		done     = 2
	)
	state := make(map[string]int)
	var visit func(name, from string) error
	visit = func(name, from string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle through %s", name)
		}
		m, ok := mods[name]
		if !ok {
			if from == "" {
				return fmt.Errorf("module %s is not in the kernel's modules", name)
			}
			return fmt.Errorf("module %s (needed by %s) is not in the kernel's modules", name, from)
		}
		state[name] = visiting
		data, err := load(m)
		if err != nil {
			return err
		}
		deps, err := depends(m, data)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = done
		r.deps[name] = deps
		r.data[name] = data
		r.order = append(r.order, m)
		return nil
	}
	for _, w := range want {
		if err := visit(canonical(w), ""); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// modulesDep renders modules.dep as depmod does: each module with all of its
// transitive dependencies, the ones to load last first.
func modulesDep(mods map[string]module, r *resolved) []byte {
	var lines []string
	for _, m := range r.order {
		var all []string
		seen := make(map[string]bool)
		var walk func(string)
		walk = func(n string) {
			for _, d := range r.deps[n] {
				if !seen[d] {
					seen[d] = true
					all = append(all, mods[d].relPath)
					walk(d)
				}
			}
		}
		walk(m.name)
		lines = append(lines, m.relPath+":"+prefixEach(" ", all))
	}
	sort.Strings(lines)
	return []byte(strings.Join(lines, "\n") + "\n")
}

func prefixEach(p string, xs []string) string {
	var b strings.Builder
	for _, x := range xs {
		b.WriteString(p)
		b.WriteString(x)
	}
	return b.String()
}

// tarWriter writes entries with fixed metadata, so equal inputs give equal bytes.
type tarWriter struct {
	tw   *tar.Writer
	dirs map[string]bool
}

func (w *tarWriter) dir(path string) error {
	if path == "." || w.dirs[path] {
		return nil
	}
	if err := w.dir(filepath.Dir(path)); err != nil {
		return err
	}
	w.dirs[path] = true
	return w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: path + "/", Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX})
}

func (w *tarWriter) file(path string, data []byte) error {
	if err := w.dir(filepath.Dir(path)); err != nil {
		return err
	}
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := w.tw.Write(data)
	return err
}

func run(modulesDir, out string, want []string) error {
	release := filepath.Base(modulesDir)
	mods, err := scan(modulesDir)
	if err != nil {
		return err
	}
	r, err := resolve(mods, want)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("failed to create %s: %w", out, err)
	}
	w := &tarWriter{tw: tar.NewWriter(f), dirs: make(map[string]bool)}
	base := filepath.Join("lib/modules", release)
	files := map[string][]byte{
		filepath.Join(base, "modules.dep"):  modulesDep(mods, r),
		"etc/modules-load.d/appliance.conf": []byte(strings.Join(want, "\n") + "\n"),
	}
	for _, m := range r.order {
		files[filepath.Join(base, m.relPath)] = r.data[m.name]
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := w.file(p, files[p]); err != nil {
			f.Close()
			return fmt.Errorf("failed to write %s into %s: %w", p, out, err)
		}
	}
	if err := errors.Join(w.tw.Close(), f.Close()); err != nil {
		return fmt.Errorf("failed to finish %s: %w", out, err)
	}
	return nil
}

func main() {
	modulesDir := flag.String("modules_dir", "", "the kernel's lib/modules/<release> directory")
	out := flag.String("out", "", "the tar file to write")
	flag.Parse()
	if *modulesDir == "" || *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: kmods -modules_dir DIR -out FILE.tar MODULE...")
		os.Exit(2)
	}
	if err := run(*modulesDir, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "kmods:", err)
		os.Exit(1)
	}
}
