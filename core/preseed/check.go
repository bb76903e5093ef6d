package preseed

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"go.uber.org/zap"
)

// check is the second phase: it learns every bundle's images (cheap: no
// layer is read), checks each bundle against its preseed manifest entry,
// and refuses the bundles that claim one name together, so that all of
// this is known before any bundle is imported. A refused bundle keeps its
// reason in b.err.
//
// It returns the bundles the manifest lists that are absent, failed.
func (c Config) check(ctx context.Context, logger *zap.Logger, bundles []*bundle) []*bundle {
	man, manErr := c.loadManifest(logger, bundles)
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
	return man.absent(bundles)
}

// loadManifest reads c.Manifest, if one is set. A manifest that cannot be
// used is returned as the error every bundle fails with.
func (c Config) loadManifest(logger *zap.Logger, bundles []*bundle) (*manifest, error) {
	if c.Manifest == "" {
		return nil, nil
	}
	man, err := loadManifest(c.Manifest)
	if err != nil {
		logger.Error("preseed manifest unusable; every bundle is refused", zap.String("manifest", c.Manifest), zap.Error(err))
		return nil, err
	}
	logger.Info("checking bundles against the preseed manifest", zap.String("manifest", c.Manifest), zap.Int("bundles", len(man.byPath)))
	return man, nil
}

// checkBundle reads one bundle's metadata into b.meta and, with a
// manifest, checks it against the bundle's entry.
func (c Config) checkBundle(ctx context.Context, man *manifest, b *bundle) error {
	if man != nil {
		var err error
		if b.entry, err = man.entry(b); err != nil {
			return err
		}
	}
	s, err := openStream(c.Open, b.path, b.kind, false)
	if err != nil {
		return err
	}
	defer s.Close()
	b.meta, err = readMetadata(ctx, s, c.Platform)
	b.bytes += s.count.n
	if err != nil {
		return err
	}
	if man != nil {
		size, err := s.size(b.path)
		if err != nil {
			return err
		}
		if err := man.check(b, b.entry, size); err != nil {
			return err
		}
	}
	return c.checkCached(b)
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
		for _, im := range b.meta.images {
			k := b.namespace + "/" + im.Name
			primary[k] = append(primary[k], b)
			for _, n := range im.names() {
				all[b.namespace+"/"+n] = append(all[b.namespace+"/"+n], b)
			}
		}
	}
	for k, bs := range all {
		for _, b := range bs {
			n := strings.TrimPrefix(k, b.namespace+"/")
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
		if o != b && !slices.Contains(out, o.file) {
			out = append(out, o.file)
		}
	}
	sort.Strings(out)
	return out
}
