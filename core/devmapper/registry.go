package devmapper

import "sync"

// Registry remembers every dm device Links has linked, by its major:minor
// and its loop device's, so that VerityLog can still name the layer of a
// device gone from sysfs by the time its corruption line is read (the
// container that hit the error exits and its mount goes). A number the
// kernel reuses is overwritten by its new device. Safe for concurrent use;
// a nil *Registry remembers nothing.
type Registry struct {
	mu    sync.Mutex
	byDev map[string]Device
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{byDev: make(map[string]Device)} }

func (r *Registry) add(d Device) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byDev[d.Dev] = d
	if d.LoopDev != "" {
		r.byDev[d.LoopDev] = d
	}
}

// lookup is the device last recorded under dev (either number).
func (r *Registry) lookup(dev string) (Device, bool) {
	if r == nil {
		return Device{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.byDev[dev]
	return d, ok
}
