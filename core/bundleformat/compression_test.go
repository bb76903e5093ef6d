package bundleformat_test

import (
	"testing"

	"github.com/appliance-bundler/appliance/core/bundleformat"
)

// Each kind round-trips through its name and its extension, and names that
// are not a bundle's are told apart.
func TestCompressionTable(t *testing.T) {
	for _, c := range bundleformat.Compressions() {
		if p, err := bundleformat.ParseCompression(string(c)); err != nil || p != c {
			t.Errorf("ParseCompression(%q) = %q, %v", c, p, err)
		}
		if k, ok := bundleformat.FromFileName("hello" + c.Ext()); !ok || k != c {
			t.Errorf("FromFileName(hello%s) = %q, %v", c.Ext(), k, ok)
		}
	}
	for _, name := range []string{"hello.tgz", "hello.tar.xz", "hello", "tar"} {
		if k, ok := bundleformat.FromFileName(name); ok {
			t.Errorf("FromFileName(%s) = %q, want not a bundle", name, k)
		}
	}
	if _, err := bundleformat.ParseCompression("xz"); err == nil {
		t.Error("ParseCompression(xz) succeeded")
	}
}
