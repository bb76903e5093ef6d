package containerd

import (
	"slices"
	"testing"
)

// containerd gets a PATH with /usr/bin (mkfs.erofs) whatever it inherits:
// none (the kernel starts init without one), or one that lacks it; an
// inherited PATH keeps its order and comes first.
func TestCommandEnvPath(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{env: []string{"HOME=/"}, want: "PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		{env: []string{"PATH=/opt/x:/usr/bin", "TERM=linux"}, want: "PATH=/opt/x:/usr/bin:/usr/sbin:/sbin:/bin"},
	} {
		got := commandEnv(tc.env)
		if !slices.Contains(got, tc.want) {
			t.Errorf("commandEnv(%q) = %q, want it to hold %q", tc.env, got, tc.want)
		}
		n := 0
		for _, kv := range got {
			if len(kv) >= 5 && kv[:5] == "PATH=" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("commandEnv(%q) = %q: want exactly one PATH", tc.env, got)
		}
	}
}
