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
}

// criNames are the names of the images of CRINamespace that the run
// imported or skipped: those the CRI must serve.
func criNames(bundles []*bundle) []servedName {
	var out []servedName
	for _, b := range bundles {
		if b.err != nil || b.meta == nil || b.namespace != CRINamespace {
			continue
		}
		for _, im := range b.meta.images {
			for _, n := range im.names() {
				out = append(out, servedName{name: n, image: im.Name})
			}
		}
	}
	return out
}

// waitServed returns once the CRI, asked through containerd's own
// connection, serves every name of criNames: what "done" promises the
// kubelet, whose pods name their images with imagePullPolicy Never and
// would otherwise fail with ErrImageNeverPull in the gap between a record's
// creation and the CRI's handling of its event. It fails after c.CRIWait
// with the names still missing and why.
func (c Config) waitServed(ctx context.Context, logger *zap.Logger, cl *client.Client, bundles []*bundle) error {
	want := criNames(bundles)
	if len(want) == 0 {
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
	for {
		resp, err := cri.ListImages(wctx, &runtimeapi.ListImagesRequest{})
		var missing []string
		if err == nil {
			missing = unserved(resp.Images, want)
			if len(missing) == 0 {
				logger.Info("the CRI serves the preseeded images",
					zap.Int("names", len(want)), zap.Duration("wait", time.Since(start)))
				return nil
			}
		}
		if err != nil && unavailable(err) && ctx.Err() == nil && wctx.Err() == nil {
			return fmt.Errorf("failed to list the CRI's images: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wctx.Done():
			if err != nil {
				return fmt.Errorf("the CRI did not list its images within %s: %w", c.CRIWait, err)
			}
			return fmt.Errorf("the CRI does not serve %d of the %d preseeded names of namespace %s within %s: %s",
				len(missing), len(want), CRINamespace, c.CRIWait, strings.Join(missing, "; "))
		case <-t.C:
		}
	}
}

// unserved lists each wanted name the CRI's image list does not serve as
// it must, with the reason.
func unserved(imgs []*runtimeapi.Image, want []servedName) []string {
	byName := make(map[string]*runtimeapi.Image)
	for _, img := range imgs {
		for _, n := range slices.Concat(img.RepoTags, img.RepoDigests) {
			byName[n] = img
		}
	}
	var missing []string
	for _, w := range want {
		img := byName[w.name]
		switch {
		case img == nil:
			missing = append(missing, w.name+" (not listed)")
		case !img.Pinned:
			missing = append(missing, w.name+" (not pinned)")
		case byName[w.image] != nil && byName[w.image].Id != img.Id:
			missing = append(missing, fmt.Sprintf("%s (CRI image %s, but %s is %s)", w.name, img.Id, w.image, byName[w.image].Id))
		}
	}
	return missing
}
