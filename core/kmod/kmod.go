// Package kmod loads kernel modules at boot: it reads the modules to load
// from modules-load.d files, resolves their dependencies from modules.dep
// (as written by depmod or by the build's kmods tool), and loads each module
// once, dependencies first, with finit_module(2).
//
// It must not guess: a module or dependency that is not in modules.dep is an
// error naming it, and a module already in the kernel (loaded or built in)
// is not an error. It must not stop at one module's failure: the others
// still load, and the error names each module that did not, with why.
package kmod

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
// every dependency before its dependents. It orders by each dependency's own
// line, not by the position in the dependent's list, which a tool may write
// in any order (dm-verity's lists dm-mod before dm-bufio, which needs it).
func (d *Deps) Order(modules []string) ([]string, error) {
	o := orderer{d: d, state: make(map[string]int)}
	for _, m := range modules {
		path, ok := d.paths[strings.ReplaceAll(m, "-", "_")]
		if !ok {
			return nil, fmt.Errorf("module %s is not in %s", m, filepath.Join(d.dir, "modules.dep"))
		}
		if err := o.visit(path); err != nil {
			return nil, err
		}
	}
	return o.order, nil
}

// orderer is a depth-first walk of modules.dep; state is 1 while a module's
// dependencies are being walked and 2 once it is in order.
type orderer struct {
	d     *Deps
	state map[string]int
	order []string
}

func (o *orderer) visit(path string) error {
	switch o.state[path] {
	case 1:
		return fmt.Errorf("%s depends on itself in %s", path, filepath.Join(o.d.dir, "modules.dep"))
	case 2:
		return nil
	}
	o.state[path] = 1
	deps := o.d.deps[path]
	// modules.dep lists the module to load last first.
	for i := len(deps) - 1; i >= 0; i-- {
		if _, ok := o.d.deps[deps[i]]; !ok {
			return fmt.Errorf("%s depends on %s, which is not in %s", path, deps[i], filepath.Join(o.d.dir, "modules.dep"))
		}
		if err := o.visit(deps[i]); err != nil {
			return err
		}
	}
	o.state[path] = 2
	o.order = append(o.order, path)
	return nil
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

// LoadError is the failure of one module: its own, or that of a dependency.
type LoadError struct {
	Module string // the kernel's name of the module
	Err    error
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("module %s failed to load: %v", e.Module, e.Err)
}

func (e *LoadError) Unwrap() error { return e.Err }

// Failure is the LoadError of module in err (as Load returns it), or nil
// when module did not fail.
func Failure(err error, module string) *LoadError {
	var le *LoadError
	if errors.As(err, &le) && le.Module == module {
		return le
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			if le := Failure(e, module); le != nil {
				return le
			}
		}
	}
	return nil
}

// Without is err (as Load returns it) without module's LoadError: nil when
// no other module failed.
func Without(err error, module string) error {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		if Failure(err, module) != nil {
			return nil
		}
		return err
	}
	var rest []error
	for _, e := range joined.Unwrap() {
		if e = Without(e, module); e != nil {
			rest = append(rest, e)
		}
	}
	return errors.Join(rest...)
}

// Load loads the module files (paths relative to d's directory) in order.
// A module the kernel already has is skipped. A module that fails does not
// stop the others (a missing file system must not cost the network): only
// the modules that depend on it are not loaded. The error joins a
// LoadError for each module not loaded.
func (d *Deps) Load(ctx context.Context, logger *zap.Logger, paths []string) error {
	failed := make(map[string]bool)
	var errs []error
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		err := d.loadOne(logger, p, failed)
		if err != nil {
			failed[p] = true
			errs = append(errs, &LoadError{Module: name(p), Err: err})
		}
	}
	return errors.Join(errs...)
}

// loadOne loads the module file p unless a dependency of it has failed.
func (d *Deps) loadOne(logger *zap.Logger, p string, failed map[string]bool) error {
	for _, dep := range d.deps[p] {
		if failed[dep] {
			return fmt.Errorf("it needs module %s, which failed to load", name(dep))
		}
	}
	full := filepath.Join(d.dir, p)
	f, err := os.Open(full)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", full, err)
	}
	err = unix.FinitModule(int(f.Fd()), "", 0)
	f.Close()
	switch {
	case errors.Is(err, unix.EEXIST):
		logger.Info("module already loaded", zap.String("module", name(p)))
	case err != nil:
		return explain(name(p), full, err)
	default:
		logger.Info("module loaded", zap.String("module", name(p)))
	}
	return nil
}

// explain words finit_module's error for the module m: EPERM for a module on
// the kernel's module_blacklist says only "operation not permitted".
func explain(m, file string, err error) error {
	if errors.Is(err, unix.EPERM) {
		if cmdline, rerr := os.ReadFile("/proc/cmdline"); rerr == nil && Blacklisted(string(cmdline), m) {
			return fmt.Errorf("finit_module %s: %w (the kernel command line blacklists it: module_blacklist)", file, err)
		}
	}
	return fmt.Errorf("finit_module %s: %w", file, err)
}

// Blacklisted tells whether the kernel command line cmdline names module m
// in a module_blacklist= list, which makes the kernel refuse to load it.
func Blacklisted(cmdline, m string) bool {
	for _, arg := range strings.Fields(cmdline) {
		list, ok := strings.CutPrefix(arg, "module_blacklist=")
		if !ok {
			continue
		}
		// The kernel compares names as written: dm-mod does not block dm_mod.
		if slices.Contains(strings.Split(list, ","), m) {
			return true
		}
	}
	return false
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
