package db

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Transient is pgshift's one retry policy: it reports whether err is a failure that the same
// work, redone on a new session, can get past — the session or the server went away, or the
// server asked to be tried again — as opposed to anything the server said about the work
// itself (a constraint, a missing object, a privilege), which would fail again. It decides on
// error types and SQLSTATE classes only:
//
//   - 08 connection exception, 53 insufficient resources (too many connections, out of
//     memory), 57 operator intervention (shutdown, terminated session, server starting);
//   - 40001 serialization failure, 40P01 deadlock;
//   - 55006 object in use (a replication slot still held by a session that is going away);
//   - network errors, EOF mid-message, timeouts and connect failures from the driver.
//
// Cancellation of the caller's context is never transient.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) != 5:
			return false
		case pgErr.Code[:2] == "08", pgErr.Code[:2] == "53", pgErr.Code[:2] == "57":
			return true
		case pgErr.Code == "40001", pgErr.Code == "40P01", pgErr.Code == "55006":
			return true
		}
		return false
	}
	var ne net.Error
	var connErr *pgconn.ConnectError
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.Timeout(err) || pgconn.SafeToRetry(err) || errors.As(err, &connErr)
}

// ConnectWhenUp connects like Connect, but while the server answers that it is starting up,
// in crash recovery or shutting down (57P03) it waits and tries again, for at most maxWait: a
// restart (a crash, a failover, maintenance) passes by itself, unlike a wrong DSN or a server
// that is down, which fail at once. An agent started by its supervisor while the target
// recovers then begins as soon as the target accepts connections.
func (e Endpoint) ConnectWhenUp(ctx context.Context, maxWait time.Duration, log *slog.Logger) (*pgx.Conn, error) {
	deadline := time.Now().Add(maxWait)
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		conn, err := e.Connect(ctx)
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "57P03" || time.Now().Add(delay).After(deadline) {
			return conn, err
		}
		if attempt == 1 {
			log.Warn("the server is not accepting connections yet; waiting for it", "server", e.String(),
				"detail", pgErr.Message, "gives_up_in", time.Until(deadline).Round(time.Second).String())
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// WhenUp is ConnectWhenUp as a connect function, for callers that take one.
func (e Endpoint) WhenUp(maxWait time.Duration, log *slog.Logger) func(context.Context) (*pgx.Conn, error) {
	return func(ctx context.Context) (*pgx.Conn, error) { return e.ConnectWhenUp(ctx, maxWait, log) }
}
