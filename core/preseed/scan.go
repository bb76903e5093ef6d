package preseed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/identifiers"
	"go.uber.org/zap"

	"github.com/appliance-bundler/appliance/core/bundleformat"
	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
	"github.com/appliance-bundler/appliance/core/preseed/status"
)

// scan is the first phase: it lists the bundles under c.Root and logs what
// is there that is not one.
func (c Config) scan(logger *zap.Logger) ([]*bundle, []status.Ignored, error) {
	bundles, ignored, err := scanRoot(c.Root)
	if err != nil {
		return nil, nil, err
	}
	for _, ig := range ignored {
		logger.Warn("not a bundle; skipped", zap.String("path", ig.Path), zap.String("reason", ig.Reason))
	}
	return bundles, ignored, nil
}

// scanRoot lists the bundles under root and what is there that is not one.
func scanRoot(root string) ([]*bundle, []status.Ignored, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read %s: %w", root, err)
	}
	var bundles []*bundle
	var ignored []status.Ignored
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		found, ig := scanNamespace(dir, e.Name())
		bundles = append(bundles, found...)
		ignored = append(ignored, ig...)
	}
	return bundles, ignored, nil
}

// scanNamespace lists the bundles of one namespace directory.
func scanNamespace(dir, namespace string) ([]*bundle, []status.Ignored) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, []status.Ignored{{Path: dir, Reason: err.Error()}}
	}
	if !st.IsDir() {
		return nil, []status.Ignored{{Path: dir, Reason: "not a namespace directory"}}
	}
	// containerd checks namespace names with identifiers.Validate.
	if err := identifiers.Validate(namespace); err != nil {
		return nil, []status.Ignored{{Path: dir, Reason: fmt.Sprintf("invalid namespace name: %v", err)}}
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, []status.Ignored{{Path: dir, Reason: err.Error()}}
	}
	var bundles []*bundle
	var ignored []status.Ignored
	for _, f := range files {
		path := filepath.Join(dir, f.Name())
		kind, ok := bundleformat.FromFileName(f.Name())
		if !ok {
			ignored = append(ignored, status.Ignored{Path: path, Reason: notBundleReason()})
			continue
		}
		bundles = append(bundles, &bundle{File: bundlefile.File{Namespace: namespace, FileName: f.Name(), Path: path, Compression: kind}})
	}
	return bundles, ignored
}

// notBundleReason names the file name extensions a bundle may have, from
// the format's one table.
func notBundleReason() string {
	var exts []string
	for _, c := range bundleformat.Compressions() {
		exts = append(exts, "*"+c.Ext())
	}
	return "not a bundle: want " + strings.Join(exts, ", ")
}
