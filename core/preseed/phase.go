package preseed

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"go.uber.org/zap"
)

// namedImages lists, per namespace, the records of the bundles' image
// names as they are before any import of the run: present looks a name up
// there, one round trip per namespace instead of one per bundle. No
// bundle of the run registers another's image name (refuseSharedNames),
// so only someone else could change one meanwhile, which a look-up per
// bundle would not rule out either. A namespace whose list fails fails its
// bundles.
func namedImages(ctx context.Context, cl *client.Client, bundles []*bundle) map[string]map[string]images.Image {
	filters := make(map[string][]string)
	for _, b := range bundles {
		if b.err == nil {
			for _, im := range b.meta.Unpacked {
				filters[b.Namespace] = append(filters[b.Namespace], fmt.Sprintf("name==%q", im.Name))
			}
		}
	}
	known := make(map[string]map[string]images.Image)
	for ns, fs := range filters {
		imgs, err := cl.ImageService().List(namespaces.WithNamespace(ctx, ns), fs...)
		for _, b := range bundles {
			if err != nil && b.err == nil && b.Namespace == ns {
				b.err = fmt.Errorf("failed to look up the images of namespace %s: %w", ns, err)
			}
		}
		known[ns] = make(map[string]images.Image)
		for _, img := range imgs {
			known[ns][img.Name] = img
		}
	}
	return known
}

// importRun is what the imports of one import phase share.
//
// The leases, one per namespace, labelled LabelLease, are taken when the
// namespace's first bundle is imported and removed once every bundle was
// handled. One per phase rather than one per bundle saves two
// transactions per bundle and, as no lease is removed while imports
// write, the GC runs a removal starts then. A bundle's content is still
// reachable only through the lease until its names are registered; a
// failed bundle's is collected after the phase.
type importRun struct {
	cl     *client.Client
	mu     sync.Mutex
	ids    map[string]string // namespace -> lease ID
	chains *chainLocks
}

// with returns ctx with its namespace's lease, taken first if need be.
func (l *importRun) with(ctx context.Context) (context.Context, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := l.ids[ns]
	if !ok {
		lease, err := l.cl.LeasesService().Create(ctx, leases.WithRandomID(), leases.WithExpiration(leaseExpiry),
			leases.WithLabels(map[string]string{LabelLease: ns}))
		if err != nil {
			return nil, fmt.Errorf("failed to take a lease: %w", err)
		}
		id, l.ids[ns] = lease.ID, lease.ID
	}
	return leases.WithLease(ctx, id), nil
}

// release removes the leases. Their content left to containerd's GC is
// that of failed imports: the others' names reference theirs. A lease
// that cannot be removed is the next run's (discardLeases).
func (l *importRun) release(ctx context.Context, logger *zap.Logger) {
	for ns, id := range l.ids {
		if err := l.cl.LeasesService().Delete(namespaces.WithNamespace(ctx, ns), leases.Lease{ID: id}); err != nil && !errdefs.IsNotFound(err) {
			logger.Warn("failed to remove the import's lease", zap.String("namespace", ns), zap.String("lease", id), zap.Error(err))
		}
	}
}

// chainLocks is the unpackers' duplication suppressor for one import phase
// (unpack.WithDuplicationSuppressor), keyed by snapshot: of the imports
// that unpack a base layer several bundles share, one prepares and
// commits its snapshot while the others wait, then find it (containerd
// adds it to their lease), instead of each preparing its own, committing
// and removing all but one.
type chainLocks struct {
	mu   sync.Mutex
	held map[string]chan struct{} // closed on Unlock
}

func (l *chainLocks) Lock(ctx context.Context, key string) error {
	for {
		l.mu.Lock()
		ch, busy := l.held[key]
		if !busy {
			l.held[key] = make(chan struct{})
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (l *chainLocks) Unlock(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ch, ok := l.held[key]; ok {
		close(ch)
		delete(l.held, key)
	}
}
