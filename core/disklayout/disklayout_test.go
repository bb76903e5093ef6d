package disklayout

import "testing"

// Entry names round-trip, and systemd-boot's counter forms parse as
// systemd-boot reads them ("+LEFT" and "+LEFT-DONE").
func TestEntryNames(t *testing.T) {
	for _, c := range []struct {
		name string
		want Entry
		ok   bool
	}{
		{"appliance-2.efi", Entry{Version: "2"}, true},
		{"appliance-1.4.2+1.efi", Entry{Version: "1.4.2", Counted: true, TriesLeft: 1}, true},
		{"APPLIANCE-3+0-1.EFI", Entry{Version: "3", Counted: true, TriesDone: 1}, true},
		{"appliance-.efi", Entry{}, false},
		{"appliance-2+x.efi", Entry{}, false},
		{"other-2.efi", Entry{}, false},
		{"appliance-2.conf", Entry{}, false},
	} {
		got, ok := ParseEntry(c.name)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("ParseEntry(%q) = %+v, %v; want %+v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
	for _, e := range []Entry{{Version: "2"}, {Version: "2", Counted: true, TriesLeft: 1}, {Version: "2", Counted: true, TriesDone: 3}} {
		if got, ok := ParseEntry(e.Name()); !ok || got != e {
			t.Errorf("ParseEntry(%q) = %+v, %v; want %+v", e.Name(), got, ok, e)
		}
	}
	if !(Entry{Version: "3", Counted: true, TriesDone: 1}).Bad() || (Entry{Version: "3", Counted: true, TriesLeft: 1}).Bad() || (Entry{Version: "3"}).Bad() {
		t.Error("Bad: only a counted entry with no tries left is bad")
	}
}
