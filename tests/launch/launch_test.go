package launch

import (
	"fmt"
	"net"
	"testing"
)

// TestHoldPortsGivesDistinctPortsHeldUntilRelease picks many ports at once,
// as Start does for its forwards: they must all differ and each must stay
// bound (a new listener on it fails) until release, after which it is free
// for QEMU. Closing each listener before picking the next gives duplicates
// among a few hundred picks here, and no port stays bound.
func TestHoldPortsGivesDistinctPortsHeldUntilRelease(t *testing.T) {
	const n = 500
	ports, release, err := holdPorts(n)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if len(ports) != n {
		t.Fatalf("got %d ports, want %d", len(ports), n)
	}
	seen := make(map[int]int)
	for i, p := range ports {
		if j, ok := seen[p]; ok {
			t.Errorf("port %d picked twice (picks %d and %d)", p, j, i)
		}
		seen[p] = i
	}
	free := 0
	for _, p := range ports {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			free++
		}
	}
	if free > 0 {
		t.Errorf("%d of %d picked ports were no longer bound before release", free, n)
	}
	release()
	// After release the first ports are free to bind again (as QEMU does).
	for _, p := range ports[:2] {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("port %d still bound after release: %v", p, err)
			continue
		}
		l.Close()
	}
}
