package cdc

import (
	"strings"
	"testing"
)

// TestPluginArgsPerVersion: pgoutput refuses options its version does not know ("unrecognized
// pgoutput option: messages" on 13), so each version gets exactly what it has.
func TestPluginArgsPerVersion(t *testing.T) {
	for _, c := range []struct {
		version int
		want    string
	}{
		{100023, `proto_version '1', publication_names '"p"'`},
		{120022, `proto_version '1', publication_names '"p"'`},
		{130023, `proto_version '1', publication_names '"p"'`},
		{140023, `proto_version '2', publication_names '"p"', streaming 'on', messages 'true'`},
		{180004, `proto_version '2', publication_names '"p"', streaming 'on', messages 'true'`},
	} {
		s := NewStream(nil, Options{Slot: "s", Publication: "p", ServerVersion: c.version}, nil, nil, nil, nil)
		if got := strings.Join(s.pluginArgs(), ", "); got != c.want {
			t.Errorf("%d: %s, want %s", c.version, got, c.want)
		}
	}
	// origin 'none' from 16 (reverse replication's OriginNone); 15 filters on the client.
	for version, want := range map[int]bool{150010: false, 160006: true, 180000: true} {
		s := NewStream(nil, Options{Slot: "s", Publication: "p", ServerVersion: version, OriginNone: true}, nil, nil, nil, nil)
		if got := strings.Contains(strings.Join(s.pluginArgs(), ", "), "origin 'none'"); got != want {
			t.Errorf("%d with OriginNone: origin 'none' sent %v, want %v", version, got, want)
		}
	}
}
