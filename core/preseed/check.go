package preseed

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/appliance-bundler/appliance/core/preseed/bundlefile"
	"github.com/appliance-bundler/appliance/core/preseed/check"
)

// check is the second phase: it learns every bundle's images (cheap: no
// layer is read), checks each bundle against its preseed manifest entry
// and the layer content cache (core/preseed/check), and refuses the
// bundles that claim one name together, so that all of this is known
// before any bundle is imported. A refused bundle keeps its reason in
// b.err.
//
// It returns the bundles the manifest lists that are absent, failed.
func (c Config) check(ctx context.Context, logger *zap.Logger, bundles []*bundle) []*bundle {
	man, manErr := c.loadManifest(logger)
	parallel(ctx, bundles, c.Concurrency, func(b *bundle) {
		if manErr != nil {
			b.err = manErr
			return
		}
		b.err = c.checkBundle(ctx, man, b)
	})
	refuseSharedNames(bundles)
	if man == nil {
		return nil
	}
	files := make([]bundlefile.File, 0, len(bundles))
	for _, b := range bundles {
		files = append(files, b.File)
	}
	var absent []*bundle
	for _, a := range man.Absent(files) {
		absent = append(absent, &bundle{File: a.File, err: a.Err})
	}
	return absent
}

// loadManifest reads c.Manifest, if one is set. A manifest that cannot be
// used is returned as the error every bundle fails with.
func (c Config) loadManifest(logger *zap.Logger) (*check.Manifest, error) {
	if c.Manifest == "" {
		return nil, nil
	}
	man, err := check.LoadManifest(c.Manifest)
	if err != nil {
		logger.Error("preseed manifest unusable; every bundle is refused", zap.String("manifest", c.Manifest), zap.Error(err))
		return nil, err
	}
	logger.Info("checking bundles against the preseed manifest", zap.String("manifest", c.Manifest), zap.Int("bundles", man.Len()))
	return man, nil
}

// checkBundle reads one bundle's metadata into b.meta and checks it
// against its manifest entry (with a manifest) and the layer content
// cache. The cached layers then leave b.meta.Layers: they are neither
// ingested nor expected in the content store.
func (c Config) checkBundle(ctx context.Context, man *check.Manifest, b *bundle) error {
	if man != nil {
		var err error
		if b.entry, err = man.Entry(b.File); err != nil {
			return err
		}
		b.man = man
	}
	s, err := bundlefile.OpenStream(c.Open, b.File, false)
	if err != nil {
		return err
	}
	defer s.Close()
	b.meta, err = bundlefile.ReadMetadata(ctx, s, c.Platform)
	b.bytes += s.BytesRead()
	if err != nil {
		return err
	}
	if man != nil {
		size, err := s.Size()
		if err != nil {
			return err
		}
		if err := man.Check(b.File, b.entry, b.meta, size); err != nil {
			return err
		}
	}
	cache := check.Cache{Dirs: c.CacheDirs, RequireVerity: c.RequireVerity, Snapshotter: c.Snapshotter}
	cached, err := cache.Find(b.File, b.meta)
	if err != nil {
		return err
	}
	if man != nil {
		if err := man.CheckCached(b.File, b.entry, b.meta, cached); err != nil {
			return err
		}
	}
	for d := range b.meta.Cached {
		delete(b.meta.Layers, d)
	}
	return nil
}

// refuseSharedNames fails every bundle whose image name another bundle of
// its namespace names too: neither may win by the order of the imports.
// Digest names (repo@digest) may be shared: they point to the same
// content whichever bundle registers them, and each bundle learns the
// others' files, so that it accepts their label on the record. Only
// bundles without an error so far take part: the others' metadata may be
// missing.
func refuseSharedNames(bundles []*bundle) {
	primary := make(map[string][]*bundle) // namespace/name -> bundles
	all := make(map[string][]*bundle)
	for _, b := range bundles {
		if b.err != nil || b.meta == nil {
			continue
		}
		for _, im := range b.meta.Unpacked {
			k := b.Namespace + "/" + im.Name
			primary[k] = append(primary[k], b)
			for _, n := range im.Names() {
				all[b.Namespace+"/"+n] = append(all[b.Namespace+"/"+n], b)
			}
		}
	}
	for k, bs := range all {
		for _, b := range bs {
			n := strings.TrimPrefix(k, b.Namespace+"/")
			others := otherFiles(b, bs)
			if len(others) == 0 {
				continue
			}
			if len(primary[k]) > 1 && slices.Contains(primary[k], b) {
				if b.err == nil {
					b.err = fmt.Errorf("image %s is also named by %s", n, strings.Join(otherFiles(b, primary[k]), ", "))
				}
				continue
			}
			if b.sharers == nil {
				b.sharers = make(map[string][]string)
			}
			b.sharers[n] = others
		}
	}
}

// otherFiles lists the files of bs but b's, sorted.
func otherFiles(b *bundle, bs []*bundle) []string {
	var out []string
	for _, o := range bs {
		if o != b && !slices.Contains(out, o.FileName) {
			out = append(out, o.FileName)
		}
	}
	sort.Strings(out)
	return out
}
