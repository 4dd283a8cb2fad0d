// Package db opens connections to the source and target (plain, pooled and replication) and
// turns connection and permission failures into messages that name the server and the fix.
// Every error it returns is free of passwords: it never formats a DSN itself, and it scrubs
// the DSN's password from library messages that might echo it.
package db

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgshift/pgshift/internal/config"
)

// ApplicationName is reported to the servers, so pgshift's sessions are easy to spot in
// pg_stat_activity and can be excluded from activity measurements.
const ApplicationName = "pgshift"

// Role says which side a connection goes to; it is part of every connection error.
type Role string

const (
	Source Role = "source"
	Target Role = "target"
)

// Endpoint is a DSN with the role it plays. Its String form is safe to print.
type Endpoint struct {
	Role Role
	DSN  string
	// Session, when set, runs on every new plain or pooled session before it is used (the
	// agent's lease fence); an error closes the session and fails the connect.
	Session func(ctx context.Context, conn *pgx.Conn) error
}

// String describes the endpoint without its password: "source user@host:port/db".
func (e Endpoint) String() string {
	cfg, err := pgconn.ParseConfig(e.DSN)
	if err != nil {
		return fmt.Sprintf("%s (%s)", e.Role, config.RedactDSN(e.DSN))
	}
	return fmt.Sprintf("%s %s@%s:%d/%s", e.Role, cfg.User, cfg.Host, cfg.Port, cfg.Database)
}

// ParseConfig parses the endpoint's DSN into a pgx config with pgshift's defaults: a 10 s
// connect timeout unless one is given, application_name unless one is given, and TCP
// keepalives and TCP_USER_TIMEOUT (see keepalive.go).
func (e Endpoint) ParseConfig() (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(e.DSN)
	if err != nil {
		return nil, e.describe(err)
	}
	if err := applyDefaults(&cfg.Config); err != nil {
		return nil, e.describe(err)
	}
	return cfg, nil
}

func applyDefaults(cfg *pgconn.Config) error {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = ApplicationName
	}
	// pgshift's sessions run their own transactions and never sit in one for nothing, but a
	// stall (a busy agent, a slow stream) can outlast a short idle_in_transaction_session_timeout
	// that the database carries for its applications — and the copy brings the source's
	// database settings to the target. Ended by it, an apply batch would stop the agent. A
	// startup parameter overrides server, database and role settings; a DSN may still set one.
	if _, ok := cfg.RuntimeParams["idle_in_transaction_session_timeout"]; !ok {
		cfg.RuntimeParams["idle_in_transaction_session_timeout"] = "0"
	}
	ka, err := takeKeepalive(cfg.RuntimeParams)
	if err != nil {
		return err
	}
	cfg.DialFunc = ka.dialer(cfg.ConnectTimeout).DialContext
	return nil
}

// replicationDefaults exempt a replication session from idle_in_transaction_session_timeout:
// the session that creates a slot with EXPORT_SNAPSHOT holds the snapshot in an open
// transaction and must sit idle, running nothing, until every copy worker has imported it,
// which takes as long as pre-data does. A server, database or role setting would otherwise
// end it (and the snapshot) after that timeout; a startup parameter overrides them all.
func replicationDefaults(cfg *pgconn.Config) {
	cfg.RuntimeParams["idle_in_transaction_session_timeout"] = "0"
}

// Connect opens one session to the endpoint.
func (e Endpoint) Connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := e.ParseConfig()
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, e.describe(err)
	}
	if e.Session != nil {
		if err := e.Session(ctx, conn); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("%s: %w", e, err)
		}
	}
	return conn, nil
}

// Pool opens a pool of at most maxConns sessions to the endpoint and checks that it works.
func (e Endpoint) Pool(ctx context.Context, maxConns int) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(e.DSN)
	if err != nil {
		return nil, e.describe(err)
	}
	if err := applyDefaults(&pcfg.ConnConfig.Config); err != nil {
		return nil, e.describe(err)
	}
	if maxConns > 0 {
		pcfg.MaxConns = int32(maxConns)
	}
	if e.Session != nil {
		pcfg.AfterConnect = e.Session
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, e.describe(err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, e.describe(err)
	}
	return pool, nil
}

// Replication opens a logical replication connection (replication=database) to the endpoint,
// exempt from idle_in_transaction_session_timeout (see replicationDefaults).
func (e Endpoint) Replication(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(e.DSN)
	if err != nil {
		return nil, e.describe(err)
	}
	if err := applyDefaults(cfg); err != nil {
		return nil, e.describe(err)
	}
	replicationDefaults(cfg)
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, e.describe(err)
	}
	return conn, nil
}

// Error is a failure talking to one endpoint, with the fix when pgshift knows it.
type Error struct {
	Endpoint string // safe description, never the DSN
	// Problem is what went wrong with the context of every wrap ("read replication slot s:
	// permission denied ..."); a failure to connect is stated in a few words instead of the
	// driver's chain ("connection refused").
	Problem string
	Fix     string
	Err     error
}

func (e *Error) Error() string {
	msg := e.Endpoint + ": " + e.Problem
	if e.Fix != "" {
		msg += " — " + e.Fix
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// describe wraps err with the endpoint and, for the failures users meet most, the fix. An
// error already described for this endpoint keeps its message, with any context wrapped
// around it since, and is not described twice.
func (e Endpoint) describe(err error) error {
	if err == nil {
		return nil
	}
	name := e.String()
	secrets := config.Secrets(e.DSN)
	var inner *Error
	if errors.As(err, &inner) && inner.Endpoint == name {
		return err
	}
	problem, fix := Classify(err)
	return &Error{
		Endpoint: name,
		Problem:  config.Scrub(problem, secrets),
		Fix:      fix,
		Err:      scrubbed{err, secrets},
	}
}

// Describe is describe for callers outside the package that hit an error on an open connection.
func (e Endpoint) Describe(err error) error { return e.describe(err) }

// scrubbed hides secrets in an underlying error's text while keeping it for errors.Is/As.
type scrubbed struct {
	err     error
	secrets []string
}

func (s scrubbed) Error() string { return config.Scrub(s.err.Error(), s.secrets) }
func (s scrubbed) Unwrap() error { return s.err }

// Classify returns what went wrong, keeping the context every wrap of err added, and, where
// known, what to do about it. It decides on error types and SQLSTATEs, never on message
// wording. A failure to connect (the driver's long chain of dial errors) is replaced by a few
// words; a deadline counts as a connect timeout only when it ended a connect.
func Classify(err error) (problem, fix string) {
	text := err.Error()
	// contextOf returns the text that wraps around inner's in err's message ("read slot s: ").
	contextOf := func(inner error) string {
		if t := inner.Error(); strings.HasSuffix(text, t) {
			return strings.TrimSuffix(text, t)
		}
		return ""
	}
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return contextOf(pe) + "invalid connection string: " + unwrapMsg(pe), "use a libpq URL (postgres://user@host:5432/db) or key=value pairs (host=... dbname=...)"
	}
	var ce *pgconn.ConnectError
	connecting := errors.As(err, &ce)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		problem = pgErr.Message
		if pgErr.Detail != "" {
			problem += " (" + pgErr.Detail + ")"
		}
		if connecting {
			problem = contextOf(ce) + problem
		} else {
			problem = contextOf(pgErr) + problem + " (SQLSTATE " + pgErr.Code + ")"
		}
		return problem, sqlStateFix(pgErr)
	}
	if connecting {
		prefix := contextOf(ce)
		var dnsErr *net.DNSError
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return prefix + "connection refused", "is the server running and listening on that host and port (listen_addresses, port)?"
		case errors.As(err, &dnsErr):
			return prefix + "host " + dnsErr.Name + " not found", "fix the host name in the DSN"
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			return prefix + "timed out connecting", "check the host, port, firewall and security groups; add connect_timeout=N to wait longer"
		case errors.Is(err, context.Canceled):
			return prefix + "interrupted while connecting", ""
		}
		if u := ce.Unwrap(); u != nil {
			return prefix + "could not connect: " + u.Error(), ""
		}
		return text, ""
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return text, "is the server running and listening on that host and port (listen_addresses, port)?"
	}
	return text, ""
}

// sqlStateFix is the fix for the server errors users meet most.
func sqlStateFix(pgErr *pgconn.PgError) string {
	switch pgErr.Code {
	case "28P01":
		return "check the user and password in the DSN, ~/.pgpass or PGPASSWORD"
	case "28000":
		return "allow this client in the server's pg_hba.conf, or check that the role exists"
	case "3D000":
		return "create the database first (createdb) or fix dbname in the DSN"
	case "42501":
		return "grant the missing privilege to this user, or connect as a role that has it"
	case "53300":
		return "the server has no free connection slots: raise max_connections or lower --jobs"
	case "57P03":
		return "the server is starting up or shutting down; retry when it is up"
	case "55000":
		if strings.Contains(pgErr.Message, "wal_level") {
			return "set wal_level = logical on the source and restart it"
		}
	}
	return pgErr.Hint
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func unwrapMsg(pe *pgconn.ParseConfigError) string {
	if pe.Unwrap() != nil {
		return pe.Unwrap().Error()
	}
	return pe.Error()
}
