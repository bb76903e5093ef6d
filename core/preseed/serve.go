package preseed

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	// CRINamespace is the containerd namespace whose images the CRI
	// serves to the kubelet.
	CRINamespace = "k8s.io"
	// DefaultCRIWait bounds how long a run waits for the CRI to serve
	// the names it registered. The CRI learns of records from
	// containerd's events, handled in the background: milliseconds on a
	// quiet machine, seconds on a loaded one.
	DefaultCRIWait = 2 * time.Minute
	// criPoll is how often the CRI's image list is read while waiting.
	criPoll = 50 * time.Millisecond
)

// servedName is a name the CRI must serve once preseed is done: a tag in
// RepoTags or a digest name in RepoDigests, pinned, on the same CRI image
// as every other name of its image.
type servedName struct {
	name  string
	image string // the image's name, which groups its names
	b     *bundle
}

// criNames are the names of the images of CRINamespace that the run
// imported or skipped: those the CRI must serve.
func criNames(bundles []*bundle) []servedName {
	var out []servedName
	for _, b := range bundles {
		if b.err != nil || b.meta == nil || b.Namespace != CRINamespace {
			continue
		}
		for _, im := range b.meta.Unpacked {
			for _, n := range im.Names() {
				out = append(out, servedName{name: n, image: im.Name, b: b})
			}
		}
	}
	return out
}

// waitServed waits until the CRI, asked through containerd's own
// connection, serves every name of criNames: what "done" promises the
// kubelet, whose pods name their images with imagePullPolicy Never and
// would otherwise fail with ErrImageNeverPull in the gap between a record's
// creation and the CRI's handling of its event. After c.CRIWait, each
// bundle with a name still not served fails, naming them and why; the
// others stand. It returns an error only when the CRI never answered or
// containerd went away (the run is retried then).
func (c Config) waitServed(ctx context.Context, logger *zap.Logger, cl *client.Client, bundles []*bundle) error {
	want := criNames(bundles)
	if len(want) == 0 || c.CRIWait < 0 {
		return nil
	}
	conn, ok := cl.Conn().(*grpc.ClientConn)
	if !ok {
		return fmt.Errorf("containerd's client has no gRPC connection to ask the CRI with (%T)", cl.Conn())
	}
	cri := runtimeapi.NewImageServiceClient(conn)
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, c.CRIWait)
	defer cancel()
	t := time.NewTicker(criPoll)
	defer t.Stop()
	var missing []servedName
	var reasons []string
	listed := false
	for {
		resp, err := cri.ListImages(wctx, &runtimeapi.ListImagesRequest{})
		if err == nil {
			listed = true
			if missing, reasons = unserved(resp.Images, want); len(missing) == 0 {
				logger.Info("the CRI serves the preseeded images",
					zap.Int("names", len(want)), zap.Duration("wait", time.Since(start)))
				return nil
			}
		} else if unavailable(err) && ctx.Err() == nil && wctx.Err() == nil {
			return fmt.Errorf("failed to list the CRI's images: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wctx.Done():
			if !listed {
				return fmt.Errorf("the CRI did not list its images within %s: %w", c.CRIWait, err)
			}
			failUnserved(missing, reasons, c.CRIWait)
			return nil
		case <-t.C:
		}
	}
}

// failUnserved fails each bundle of missing with the names of it the CRI
// does not serve and why (reasons, in missing's order).
func failUnserved(missing []servedName, reasons []string, waited time.Duration) {
	byBundle := make(map[*bundle][]string)
	var order []*bundle
	for i, m := range missing {
		if _, seen := byBundle[m.b]; !seen {
			order = append(order, m.b)
		}
		byBundle[m.b] = append(byBundle[m.b], reasons[i])
	}
	for _, b := range order {
		b.err = fmt.Errorf("the CRI does not serve these names of %s after %s, so no pod can start from them: %s",
			b.Path, waited, strings.Join(byBundle[b], "; "))
	}
}

// unserved lists each wanted name the CRI's image list does not serve as
// it must, and the reason of each.
func unserved(imgs []*runtimeapi.Image, want []servedName) ([]servedName, []string) {
	byName := make(map[string]*runtimeapi.Image)
	for _, img := range imgs {
		for _, n := range slices.Concat(img.RepoTags, img.RepoDigests) {
			byName[n] = img
		}
	}
	var missing []servedName
	var reasons []string
	for _, w := range want {
		img := byName[w.name]
		reason := ""
		switch {
		case img == nil:
			reason = w.name + " (not listed)"
		case !img.Pinned:
			reason = w.name + " (not pinned)"
		case byName[w.image] != nil && byName[w.image].Id != img.Id:
			reason = fmt.Sprintf("%s (CRI image %s, but %s is %s)", w.name, img.Id, w.image, byName[w.image].Id)
		default:
			continue
		}
		missing = append(missing, w)
		reasons = append(reasons, reason)
	}
	return missing, reasons
}
