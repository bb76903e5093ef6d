package preseed

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"go.uber.org/zap"

	"github.com/appliance-bundler/appliance/core/preseed/status"
)

// report is the last phase: it turns the bundles' results into the status,
// logs each, unpins images whose bundle is gone and writes the status
// file. A bundle that failed because containerd went away under it is not
// a result: the whole run is then an error, retried once containerd is
// back.
func (c Config) report(ctx context.Context, logger *zap.Logger, cl *client.Client, start time.Time, bundles []*bundle, ignored []status.Ignored) (*status.Status, error) {
	if err := containerdGone(ctx, cl, bundles); err != nil {
		return nil, err
	}
	// "done" promises the kubelet every name: results are taken only once
	// the CRI serves them, or has failed the bundles it does not.
	if err := c.waitServed(ctx, logger, cl, bundles); err != nil {
		return nil, err
	}
	st := &status.Status{State: status.StateDone, Started: start, Ignored: ignored}
	for _, b := range bundles {
		bs, err := result(logger, b)
		if err != nil {
			return nil, err
		}
		switch bs.Result {
		case status.ResultImported:
			st.Imported++
		case status.ResultSkipped:
			st.Skipped++
		default:
			st.Failed++
		}
		st.Bytes += b.bytes
		st.Bundles = append(st.Bundles, bs)
	}

	unpinned, err := c.unpinGone(ctx, cl, bundles)
	if err != nil {
		if unavailable(err) {
			return nil, err
		}
		// Stale pins only keep images that could be collected: report,
		// do not fail the boot.
		logger.Error("failed to unpin images whose bundle is gone", zap.Error(err))
	}
	for _, u := range unpinned {
		logger.Info("bundle gone; image unpinned", zap.String("namespace", u.Namespace), zap.String("image", u.Name))
	}
	st.Unpinned = unpinned
	st.Duration = time.Since(start).Seconds()
	if err := status.Write(c.StatusPath, st); err != nil {
		return nil, err
	}
	return st, nil
}

// containerdGone asks containerd whether it is still there once a bundle
// failed: a bundle can fail because containerd died under it, with an
// error that does not say so.
func containerdGone(ctx context.Context, cl *client.Client, bundles []*bundle) error {
	for _, b := range bundles {
		if b.err != nil {
			if _, err := cl.Version(ctx); err != nil {
				return fmt.Errorf("containerd is not answering after %s failed (%v): %w", b.Path, b.err, err)
			}
			return nil
		}
	}
	return nil
}

// result is one bundle's status, logged; an error when the bundle failed
// because containerd is unavailable.
func result(logger *zap.Logger, b *bundle) (status.Bundle, error) {
	if b.err != nil {
		if unavailable(b.err) {
			return status.Bundle{}, fmt.Errorf("containerd went away while importing %s: %w", b.Path, b.err)
		}
		b.result = status.ResultFailed
	}
	bs := status.Bundle{Namespace: b.Namespace, File: b.FileName, Result: b.result, Bytes: b.bytes, Duration: b.duration.Seconds()}
	if b.meta != nil {
		for _, im := range b.meta.Unpacked {
			is := status.Image{Name: im.Name, Digest: im.Target.Digest.String()}
			if b.err == nil {
				is.References = im.Names()
			}
			bs.Images = append(bs.Images, is)
		}
	}
	log := logger.With(zap.String("namespace", b.Namespace), zap.String("file", b.Path))
	switch b.result {
	case status.ResultImported:
		log.Info("bundle imported", zap.Int("images", len(bs.Images)), zap.Int64("bytes", b.bytes), zap.Duration("duration", b.duration))
	case status.ResultSkipped:
		log.Info("bundle already imported; skipped", zap.Int("images", len(bs.Images)))
	default:
		bs.Error = b.err.Error()
		log.Error("bundle failed", zap.Error(b.err))
	}
	return bs, nil
}

// unpinGone removes our pin from images whose bundle no longer names them:
// every record (tag and digests) of a gone bundle.
// An image whose bundle file is still there but could not be read, or was
// refused, keeps its pin: its names are unknown, not gone (a bundle swapped
// for another at rest must not get the good image collected).
func (c Config) unpinGone(ctx context.Context, cl *client.Client, bundles []*bundle) ([]status.Image, error) {
	claimed := make(map[string]bool)    // namespace/name
	unreadable := make(map[string]bool) // namespace/file
	for _, b := range bundles {
		if b.meta == nil || b.err != nil {
			unreadable[b.Namespace+"/"+b.FileName] = true
		}
		if b.meta == nil {
			continue
		}
		for _, im := range b.meta.Unpacked {
			for _, n := range im.Names() {
				claimed[b.Namespace+"/"+n] = true
			}
		}
	}
	nss, err := cl.NamespaceService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to list namespaces: %w", err)
	}
	sort.Strings(nss)
	var out []status.Image
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		is := cl.ImageService()
		imgs, err := is.List(nctx, fmt.Sprintf("labels.%q", LabelBundle))
		if err != nil {
			return out, fmt.Errorf("failed to list images of namespace %s: %w", ns, err)
		}
		for _, img := range imgs {
			if claimed[ns+"/"+img.Name] || unreadable[ns+"/"+img.Labels[LabelBundle]] {
				continue
			}
			// Listing a label path without the label in Labels deletes it.
			upd := images.Image{Name: img.Name}
			if _, err := is.Update(nctx, upd, "labels."+LabelPinned, "labels."+LabelBundle); err != nil {
				return out, fmt.Errorf("failed to unpin image %s in namespace %s: %w", img.Name, ns, err)
			}
			out = append(out, status.Image{Namespace: ns, Name: img.Name, Digest: img.Target.Digest.String()})
		}
	}
	return out, nil
}
