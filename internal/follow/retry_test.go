package follow

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/apply"
	"github.com/pgshift/pgshift/internal/cdc"
)

func TestRetryable(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "57P01"}, true},  // admin shutdown: walsender terminated, server restarting
		{&pgconn.PgError{Code: "08006"}, true},  // connection failure
		{&pgconn.PgError{Code: "55006"}, true},  // slot still active for the previous session's PID
		{&pgconn.PgError{Code: "53300"}, true},  // too many connections
		{&pgconn.PgError{Code: "23505"}, false}, // unique violation: the target diverged
		{&pgconn.PgError{Code: "42P01"}, false}, // undefined table
		{fmt.Errorf("receive: %w", io.ErrUnexpectedEOF), true},
		{&net.OpError{Op: "read", Err: errors.New("connection reset")}, true},
		{fmt.Errorf("x: %w", &FatalError{Msg: "slot missing"}), false},
		{&apply.ErrSchema{Msg: "type changed"}, false},
		{fmt.Errorf("slot: %w", cdc.ErrUnknownMessage), false},
		{fmt.Errorf("slot: %w", cdc.ErrStreamEnded), true},
		{errors.New("affected 0 rows"), false},
	}
	for _, c := range cases {
		if got := retryable(c.err); got != c.want {
			t.Errorf("retryable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
