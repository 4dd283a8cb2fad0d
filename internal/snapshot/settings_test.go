package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/db"
)

// TestSessionSettingsAreTheOneDefinition: the copy's sessions and the replication session
// render values under the same settings (db.TextSettings).
func TestSessionSettingsAreTheOneDefinition(t *testing.T) {
	for _, s := range db.SetTextSettings(false) {
		if !slices.Contains(sessionSettings, s) {
			t.Errorf("the copy's session lacks %q", s)
		}
	}
	for k, v := range db.TextSettings() {
		if got := cdc.SessionParams()[k]; got != v {
			t.Errorf("replication session %s = %q, want %q", k, got, v)
		}
	}
}

// TestRetryPolicyIsTheOne: a copy chunk is redone only for what db.Transient calls transient:
// a lost session, not any error that is not the server's (a diverged target, a lost lease).
func TestRetryPolicyIsTheOne(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "57P01"}, true},
		{fmt.Errorf("copy: %w", io.ErrUnexpectedEOF), true},
		{&pgconn.PgError{Code: "23505"}, false},
		{errors.New("COPY into public.t affected 9 rows, want 10"), false},
		{fmt.Errorf("fence: %w", errors.New("this agent lost its lease")), false},
		{context.Canceled, false},
	} {
		if got := retryable(c.err); got != c.want || got != db.Transient(c.err) {
			t.Errorf("retryable(%v) = %v, want %v (db.Transient %v)", c.err, got, c.want, db.Transient(c.err))
		}
	}
}
