package preseed

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"go.uber.org/zap"
)

// ingestRefPrefix starts the ref of every ingest of ours (ingest names
// them "preseed-<digest>").
const ingestRefPrefix = "preseed-"

// discardInterrupted is the phase before all others: it removes what an
// import of an earlier run that never ended (a power cut, a killed
// containerd) left in containerd, in every namespace.
//
//   - Ingests of ours are aborted, not resumed: bytes written before a power
//     cut may never have reached the disk, and containerd would resume after
//     them.
//   - Leases of ours (labelled LabelLease) are deleted, so what only they
//     kept is left to containerd's GC; an import registers its names only
//     once all it needs is written, so no registered image depends on them.
//
// Only ours are touched. None of ours belongs to an import still running:
// the only caller, Run, is started again by the supervisor only after it
// returned, and Preseed returns only once parallel has waited for every
// import it started (a cancelled one included), so at this point no
// goroutine of ours is writing to containerd.
//
// A failure other than containerd being unavailable is logged, not
// returned: what is left may fail one bundle, which is then reported, but
// must not keep every other bundle from being imported.
func discardInterrupted(ctx context.Context, logger *zap.Logger, cl *client.Client) error {
	nss, err := cl.NamespaceService().List(ctx)
	if err != nil {
		return fmt.Errorf("failed to list namespaces: %w", err)
	}
	sort.Strings(nss)
	for _, ns := range nss {
		log := logger.With(zap.String("namespace", ns))
		nctx := namespaces.WithNamespace(ctx, ns)
		err := discardIngests(nctx, log, cl)
		if err == nil {
			err = discardLeases(nctx, log, cl)
		}
		if unavailable(err) {
			return err
		}
		if err != nil {
			log.Error("failed to discard what an interrupted import left", zap.Error(err))
		}
	}
	return nil
}

// discardIngests aborts the ingests of ours in ctx's namespace.
func discardIngests(ctx context.Context, log *zap.Logger, cl *client.Client) error {
	cs := cl.ContentStore()
	sts, err := cs.ListStatuses(ctx)
	if err != nil {
		return fmt.Errorf("failed to list ingests: %w", err)
	}
	for _, st := range sts {
		if !strings.HasPrefix(st.Ref, ingestRefPrefix) {
			continue
		}
		if err := cs.Abort(ctx, st.Ref); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("failed to abort ingest %s: %w", st.Ref, err)
		}
		log.Info("interrupted ingest discarded", zap.String("ref", st.Ref), zap.Int64("offset", st.Offset), zap.Int64("total", st.Total))
	}
	return nil
}

// discardLeases deletes the leases of ours in ctx's namespace, each
// synchronously: containerd's GC has then removed what only the lease held
// before the imports start again. A snapshot the erofs differ committed
// before a power cut may have its blob unwritten (see syncApplied), and is
// held by nothing else; left to an asynchronous GC, the next import could
// find it and reuse it.
func discardLeases(ctx context.Context, log *zap.Logger, cl *client.Client) error {
	ls := cl.LeasesService()
	found, err := ls.List(ctx, fmt.Sprintf("labels.%q", LabelLease))
	if err != nil {
		return fmt.Errorf("failed to list leases: %w", err)
	}
	for _, l := range found {
		if err := ls.Delete(ctx, l, leases.SynchronousDelete); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("failed to delete lease %s: %w", l.ID, err)
		}
		log.Info("interrupted import lease removed", zap.String("lease", l.ID))
	}
	return nil
}
