package verify

import (
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/db"
)

// TestSessionSettingsAreTheOneDefinition: verify hashes under exactly the text settings the
// copy and the replication session use (db.TextSettings), so a value renders the same in all.
func TestSessionSettingsAreTheOneDefinition(t *testing.T) {
	for _, v := range []catalog.Version{100023, 150004} {
		for _, s := range db.SetTextSettings(true) {
			if !strings.Contains(sessionSettings(v), s) {
				t.Errorf("verify's session on %s lacks %q: %s", v, s, sessionSettings(v))
			}
		}
	}
}
