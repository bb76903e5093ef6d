// Package kmod loads kernel modules at boot: it reads the modules to load
// from modules-load.d files, resolves their dependencies from modules.dep
// (as written by depmod or by the build's kmods tool), and loads each module
// once, dependencies first, with finit_module(2).
//
// It must not guess: a module or dependency that is not in modules.dep is an
// error naming it, and a module already in the kernel (loaded or built in)
// is not an error.
package kmod

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Deps is modules.dep: each module's path (relative to the modules
// directory) and the paths of all of its dependencies, the last to load first.
type Deps struct {
	dir   string
	paths map[string]string   // module name -> path
	deps  map[string][]string // path -> dependency paths
}

// name is the kernel's name of a module file: no directory, no .ko*,
// '-' as '_'.
func name(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// ReadDeps reads dir/modules.dep.
func ReadDeps(dir string) (*Deps, error) {
	file := filepath.Join(dir, "modules.dep")
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", file, err)
	}
	defer f.Close()
	d := &Deps{dir: dir, paths: make(map[string]string), deps: make(map[string][]string)}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%s:%d: no colon in %q", file, n, line)
		}
		d.paths[name(mod)] = mod
		d.deps[mod] = strings.Fields(deps)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", file, err)
	}
	return d, nil
}

// Order returns the module files to load for the named modules, each once,
// every dependency before its dependents.
func (d *Deps) Order(modules []string) ([]string, error) {
	var order []string
	seen := make(map[string]bool)
	for _, m := range modules {
		path, ok := d.paths[strings.ReplaceAll(m, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("module %s is not in %s", m, filepath.Join(d.dir, "modules.dep"))
		}
		deps := d.deps[path]
		// modules.dep lists the module to load last first.
		for i := len(deps) - 1; i >= 0; i-- {
			if _, ok := d.deps[deps[i]]; !ok {
				return nil, fmt.Errorf("%s depends on %s, which is not in %s", path, deps[i], filepath.Join(d.dir, "modules.dep"))
			}
			if !seen[deps[i]] {
				seen[deps[i]] = true
				order = append(order, deps[i])
			}
		}
		if !seen[path] {
			seen[path] = true
			order = append(order, path)
		}
	}
	return order, nil
}

// ReadLoadList reads the module names of every *.conf file in dir (one per
// line, '#' comments), in file name order.
func ReadLoadList(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.conf"))
	if err != nil {
		return nil, fmt.Errorf("failed to list %s: %w", dir, err)
	}
	sort.Strings(files)
	var mods []string
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s: %w", file, err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line != "" && !strings.HasPrefix(line, "#") {
				mods = append(mods, line)
			}
		}
	}
	return mods, nil
}

// Load loads the module files (paths relative to d's directory) in order.
// A module the kernel already has is skipped; the first other failure stops
// the loading, since later modules may depend on it.
func (d *Deps) Load(ctx context.Context, logger *zap.Logger, paths []string) error {
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		full := filepath.Join(d.dir, p)
		f, err := os.Open(full)
		if err != nil {
			return fmt.Errorf("failed to open module %s: %w", full, err)
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		switch {
		case errors.Is(err, unix.EEXIST):
			logger.Info("module already loaded", zap.String("module", name(p)))
		case err != nil:
			return fmt.Errorf("failed to load module %s: %w", full, err)
		default:
			logger.Info("module loaded", zap.String("module", name(p)))
		}
	}
	return nil
}

// LoadConfigured loads every module that the modules-load.d directory names,
// with dependencies, from the modules directory of the running kernel.
func LoadConfigured(ctx context.Context, logger *zap.Logger, modulesRoot, loadDir string) error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("failed to read the kernel release: %w", err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	want, err := ReadLoadList(loadDir)
	if err != nil {
		return err
	}
	if len(want) == 0 {
		return nil
	}
	deps, err := ReadDeps(filepath.Join(modulesRoot, release))
	if err != nil {
		return err
	}
	order, err := deps.Order(want)
	if err != nil {
		return err
	}
	return deps.Load(ctx, logger, order)
}
