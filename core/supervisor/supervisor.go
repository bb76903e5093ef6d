// Package supervisor runs the appliance's long-lived work as a tree of named
// runnables and keeps it running.
//
// A runnable is a function that receives a context. It may start children
// (Run, RunGroup), must signal Healthy once it serves its purpose and Done if
// it finishes on purpose (Signal), and gets a zap logger named by its dotted
// path in the tree (Logger). A runnable that returns an error, panics, or
// returns without having signalled Done has failed: its subtree is cancelled
// and waited for, and it is restarted, together with the siblings of the group
// it was started in, after an exponential backoff that Healthy resets.
// Children of a runnable that finished Done keep running.
//
// The supervisor must not exit the process, swallow a failure silently, or
// leave a goroutine of the tree running after Wait returns.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Runnable is one unit of supervised work.
type Runnable func(ctx context.Context) error

// SignalType is what a runnable tells the supervisor about itself.
type SignalType int

const (
	// SignalHealthy: the runnable is up and serving; resets its backoff.
	SignalHealthy SignalType = iota
	// SignalDone: the runnable has finished on purpose and will return nil.
	// Only valid after SignalHealthy.
	SignalDone
)

func (s SignalType) String() string {
	switch s {
	case SignalHealthy:
		return "healthy"
	case SignalDone:
		return "done"
	}
	return fmt.Sprintf("signal(%d)", int(s))
}

// State is where a runnable is in its life.
type State int

const (
	StateNew State = iota
	StateHealthy
	StateDone
	StateFailed
	StateCanceled
)

func (s State) String() string {
	return [...]string{"new", "healthy", "done", "failed", "canceled"}[s]
}

// Option changes a supervisor's defaults.
type Option func(*Supervisor)

// WithBackoff sets the first and the largest delay before a failed runnable
// is restarted; each failure without Healthy in between doubles the delay.
func WithBackoff(initial, max time.Duration) Option {
	return func(s *Supervisor) {
		s.backoffInitial = initial
		s.backoffMax = max
	}
}

// WithObserver calls fn after every state change of every runnable, with the
// runnable's dotted name. fn must not block; tests use it to wait for states.
func WithObserver(fn func(name string, state State)) Option {
	return func(s *Supervisor) { s.observer = fn }
}

// hooks let a test stop the tree at the points where goroutines race. Each
// is called with no lock held; nil means no call.
type hooks struct {
	// groupStarting runs in RunGroup once the group is registered with its
	// parent, before the group's loop starts.
	groupStarting func(parent string)
	// subtreesWaiting runs when a group's run has ended, with the number of
	// child groups it is about to wait for; the group is named by its first
	// member.
	subtreesWaiting func(group string, children int)
}

// withHooks is for tests only.
func withHooks(h hooks) Option {
	return func(s *Supervisor) { s.hooks = h }
}

// Supervisor owns one tree of runnables.
type Supervisor struct {
	logger         *zap.Logger
	backoffInitial time.Duration
	backoffMax     time.Duration
	observer       func(name string, state State)
	hooks          hooks

	mu    sync.Mutex
	nodes map[string]*node
	root  *group
}

// rootName is the name of the runnable passed to New.
const rootName = "root"

// New starts root as the runnable named "root" and supervises the tree until
// ctx is cancelled.
func New(ctx context.Context, logger *zap.Logger, root Runnable, opts ...Option) *Supervisor {
	s := &Supervisor{
		logger:         logger,
		backoffInitial: 500 * time.Millisecond,
		backoffMax:     30 * time.Second,
		nodes:          make(map[string]*node),
	}
	for _, o := range opts {
		o(s)
	}
	s.mu.Lock()
	s.root = s.newGroupLocked(nil, map[string]Runnable{rootName: root})
	s.mu.Unlock()
	s.root.start(ctx)
	return s
}

// Wait blocks until the supervisor's context is cancelled and every runnable
// of the tree has returned.
func (s *Supervisor) Wait() {
	<-s.root.exited
}

// States reports the current state of every runnable that exists now, by
// dotted name.
func (s *Supervisor) States() map[string]State {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]State, len(s.nodes))
	for name, n := range s.nodes {
		out[name] = n.state
	}
	return out
}

// node is one named runnable in the tree.
type node struct {
	sup      *Supervisor
	name     string // dotted path
	runnable Runnable
	logger   *zap.Logger

	// Guarded by sup.mu.
	state     State
	violation error    // a misuse of Signal, reported when the runnable returns
	children  []*group // groups started by the current run
	names     map[string]bool
	runCtx    context.Context
	// runs counts the node's runs; a context carries the run it was made
	// for, so a goroutine left from an ended run cannot signal for the
	// next one.
	runs uint64
}

// group is a set of runnables started together: they fail and restart
// together. A single Run is a group of one.
type group struct {
	parent  *node // nil for the root group
	members []*node
	exited  chan struct{} // closed when the group loop and its subtree are gone
}

type nodeKey struct{}

// nodeRun is what a runnable's context carries: its node and which run of
// it the context was made for.
type nodeRun struct {
	node *node
	run  uint64
}

func nodeFrom(ctx context.Context) (*node, uint64, error) {
	nr, ok := ctx.Value(nodeKey{}).(nodeRun)
	if !ok {
		return nil, 0, errors.New("supervisor: context does not belong to a runnable")
	}
	return nr.node, nr.run, nil
}

// validName tells whether name can be one element of a dotted path:
// lower-case letters, digits, '-' and '_', not starting with '-' or '_'.
func validName(name string) bool {
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return name != ""
}

// Run starts a child runnable of the runnable that owns ctx.
func Run(ctx context.Context, name string, r Runnable) error {
	return RunGroup(ctx, map[string]Runnable{name: r})
}

// RunGroup starts children of the runnable that owns ctx as one group: when
// one of them fails, all of them are cancelled and restarted.
func RunGroup(ctx context.Context, runnables map[string]Runnable) error {
	parent, _, err := nodeFrom(ctx)
	if err != nil {
		return err
	}
	if len(runnables) == 0 {
		// A group of none would be registered and never exit.
		return fmt.Errorf("supervisor: %s started a group with no runnables", parent.name)
	}
	s := parent.sup
	s.mu.Lock()
	if err := parent.admitLocked(ctx, runnables); err != nil {
		s.mu.Unlock()
		return err
	}
	// The liveness check and the registration share one critical section:
	// the parent's exit path reads its children under the same lock after
	// cancelling the run, so it either sees this group and waits for it, or
	// the check above has refused it.
	g := s.newGroupLocked(parent, runnables)
	parent.children = append(parent.children, g)
	runCtx := parent.runCtx
	s.mu.Unlock()
	g.start(runCtx)
	return nil
}

// admitLocked checks that n's current run, the one ctx belongs to, is alive
// and can take children with these names, and reserves the names. s.mu must
// be held.
func (n *node) admitLocked(ctx context.Context, runnables map[string]Runnable) error {
	// ctx ends with the run it was made for: a context kept from an ended
	// run must not start children in the run that replaced it.
	if n.runCtx == nil || n.runCtx.Err() != nil || ctx.Err() != nil {
		return fmt.Errorf("supervisor: %s is not running: %w", n.name, context.Canceled)
	}
	for name := range runnables {
		if !validName(name) {
			return fmt.Errorf("supervisor: invalid runnable name %q under %s (want lower-case letters, digits, '-', '_')", name, n.name)
		}
		if n.names[name] {
			return fmt.Errorf("supervisor: %s already has a child named %q", n.name, name)
		}
	}
	for name := range runnables {
		n.names[name] = true
	}
	return nil
}

// Signal reports the runnable's state to the supervisor.
// A signal with the context of an ended run is dropped: it speaks for a
// run that is gone, not for the one that replaced it.
func Signal(ctx context.Context, sig SignalType) {
	n, run, err := nodeFrom(ctx)
	if err != nil {
		// Called outside the tree: nothing to report to.
		return
	}
	s := n.sup
	s.mu.Lock()
	defer s.mu.Unlock()
	if run != n.runs {
		return
	}
	switch {
	case sig == SignalHealthy && n.state == StateNew:
		n.setState(StateHealthy)
	case sig == SignalDone && n.state == StateHealthy:
		n.setState(StateDone)
	case sig == SignalHealthy && n.state == StateHealthy, sig == SignalDone && n.state == StateDone:
		// Repeating a signal changes nothing.
	case n.violation == nil:
		n.violation = fmt.Errorf("signal %s in state %s", sig, n.state)
	}
}

// Logger returns the zap logger of the runnable that owns ctx, named by its
// dotted path. Outside the tree it returns a no-op logger.
func Logger(ctx context.Context) *zap.Logger {
	n, _, err := nodeFrom(ctx)
	if err != nil {
		return zap.NewNop()
	}
	return n.logger
}

// setState must be called with sup.mu held.
func (n *node) setState(st State) {
	n.state = st
	if n.sup.observer != nil {
		n.sup.observer(n.name, st)
	}
}

// newGroupLocked makes a group of runnables under parent (nil for the root)
// and indexes its nodes. s.mu must be held.
func (s *Supervisor) newGroupLocked(parent *node, runnables map[string]Runnable) *group {
	g := &group{parent: parent, exited: make(chan struct{})}
	names := make([]string, 0, len(runnables))
	for name := range runnables {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		full := name
		if parent != nil {
			full = parent.name + "." + name
		}
		n := &node{sup: s, name: full, runnable: runnables[name], logger: s.logger.Named(full)}
		s.nodes[full] = n
		g.members = append(g.members, n)
	}
	return g
}

// start runs the group's loop under ctx. The group must already be
// registered with its parent, so that the parent's exit path waits for it.
func (g *group) start(ctx context.Context) {
	if h := g.members[0].sup.hooks.groupStarting; h != nil && g.parent != nil {
		h(g.parent.name)
	}
	go g.loop(ctx)
}

type result struct {
	node *node
	err  error // nil: returned nil after Done
}

// loop runs the group's members until ctx is cancelled, restarting them all
// when one fails.
func (g *group) loop(ctx context.Context) {
	s := g.members[0].sup
	defer close(g.exited)
	delay := s.backoffInitial
	for {
		runCtx, cancel := context.WithCancel(ctx)
		results := make(chan result, len(g.members))
		s.mu.Lock()
		for _, n := range g.members {
			n.runs++
			n.runCtx = context.WithValue(runCtx, nodeKey{}, nodeRun{node: n, run: n.runs})
			n.children = nil
			n.names = make(map[string]bool)
			n.violation = nil
			n.setState(StateNew)
		}
		s.mu.Unlock()
		for _, n := range g.members {
			go n.run(results)
		}

		var failed *result
		for range g.members {
			r := <-results
			if r.err == nil || failed != nil {
				continue
			}
			if ctx.Err() != nil {
				// Cancelled from above: an exit, not a failure.
				continue
			}
			failed = &r
			cancel()
		}

		if failed == nil {
			// Every member finished Done, or the group is being cancelled:
			// children of Done members keep running until ctx ends.
			<-ctx.Done()
		}
		cancel()
		healthy := g.waitSubtrees()
		s.mu.Lock()
		for _, n := range g.members {
			if n.state != StateDone {
				n.setState(StateCanceled)
			}
		}
		if failed != nil {
			failed.node.setState(StateFailed)
		}
		s.mu.Unlock()
		if ctx.Err() != nil {
			g.forget()
			return
		}

		if healthy {
			delay = s.backoffInitial
		}
		failed.node.logger.Error("runnable failed; restarting its group",
			zap.Error(failed.err), zap.Duration("backoff", delay))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			g.forget()
			return
		case <-t.C:
		}
		delay = min(delay*2, s.backoffMax)
	}
}

// waitSubtrees waits for every child group of the members to exit, and tells
// whether any member had become healthy in this run.
func (g *group) waitSubtrees() bool {
	s := g.members[0].sup
	s.mu.Lock()
	var children []*group
	healthy := false
	for _, n := range g.members {
		children = append(children, n.children...)
		if n.state == StateHealthy || n.state == StateDone {
			healthy = true
		}
	}
	s.mu.Unlock()
	if h := s.hooks.subtreesWaiting; h != nil {
		h(g.members[0].name, len(children))
	}
	for _, c := range children {
		<-c.exited
	}
	return healthy
}

// forget removes the group's members from the supervisor's index.
func (g *group) forget() {
	s := g.members[0].sup
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range g.members {
		delete(s.nodes, n.name)
	}
}

// run calls the runnable once and reports how it ended.
func (n *node) run(results chan<- result) {
	s := n.sup
	s.mu.Lock()
	ctx := n.runCtx
	s.mu.Unlock()

	err := n.call(ctx)
	s.mu.Lock()
	switch {
	case err != nil:
	case n.violation != nil:
		err = fmt.Errorf("misused Signal: %w", n.violation)
	case n.state != StateDone:
		err = errors.New("returned without signalling Done")
	}
	s.mu.Unlock()
	results <- result{node: n, err: err}
}

func (n *node) call(ctx context.Context) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return n.runnable(ctx)
}
