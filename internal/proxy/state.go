package proxy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// sessionState is what a server session holds that a new server session must be given before
// it can stand in for it.
type sessionState struct {
	settings    map[string]string // SET at session level
	role        string            // SET ROLE ("none" when not set)
	sessionUser string
	listen      []string
	sqlPrepared []string // PREPARE statements made by SQL
	unmovable   []string // why the session cannot move (temporary tables, WITH HOLD cursors, advisory locks)
	hadPrimary  bool     // the session had a server connection (sessions that never sent a request have none)
}

// captureSQL reads a session's state in one round trip.
const captureSQL = `SELECT
	coalesce((SELECT jsonb_object_agg(name, current_setting(name)) FROM pg_settings
		WHERE source = 'session' AND name NOT IN ('role', 'session_authorization') AND name NOT LIKE 'transaction\_%'), '{}')::text,
	current_setting('role'),
	session_user::text,
	coalesce((SELECT jsonb_agg(c) FROM pg_listening_channels() c), '[]')::text,
	coalesce((SELECT jsonb_agg(statement) FROM pg_prepared_statements WHERE from_sql), '[]')::text,
	(SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())::int8,
	(SELECT count(*) FROM pg_cursors WHERE is_holdable)::int8,
	(SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory')::int8`

// errInternal is an error the server returned to one of the proxy's own statements.
type errInternal struct {
	query string
	resp  *pgproto3.ErrorResponse
}

func (e *errInternal) Error() string {
	q := e.query
	if len(q) > 60 {
		q = q[:60] + "…"
	}
	return fmt.Sprintf("%s (SQLSTATE %s) in %q", e.resp.Message, e.resp.Code, q)
}

// internalQuery runs one statement on a detached, idle server connection with text parameters
// and returns its rows as text (nil for NULL). Notifications that arrive meanwhile go to the
// client; notices from the proxy's own statements are dropped. It clobbers the unnamed
// statement, so the client's unnamed statement is re-parsed on next use.
func (s *session) internalQuery(ctx context.Context, sc *serverConn, query string, args ...string) ([][]*string, error) {
	deadline := time.Now().Add(s.p.cfg.ConnectTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = sc.conn.SetDeadline(deadline)
	defer sc.conn.SetDeadline(time.Time{})
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(a)
	}
	var out []byte
	out = encode(out, &pgproto3.Parse{Query: query})
	out = encode(out, &pgproto3.Bind{Parameters: params})
	out = encode(out, &pgproto3.Execute{})
	out = encode(out, &pgproto3.Sync{})
	s.mu.Lock()
	delete(sc.prepared, "")
	s.mu.Unlock()
	if err := writeAll(sc.conn, out); err != nil {
		return nil, err
	}
	var rows [][]*string
	var qerr error
	for {
		msg, err := sc.rd.next()
		if err != nil {
			return nil, err
		}
		switch msg[0] {
		case 'D':
			b := body(msg)
			n := int(binary.BigEndian.Uint16(b))
			b = b[2:]
			row := make([]*string, n)
			for i := 0; i < n; i++ {
				l := int32(binary.BigEndian.Uint32(b))
				b = b[4:]
				if l >= 0 {
					v := string(b[:l])
					row[i] = &v
					b = b[l:]
				}
			}
			rows = append(rows, row)
		case 'E':
			var er pgproto3.ErrorResponse
			if err := er.Decode(body(msg)); err != nil {
				return nil, err
			}
			qerr = &errInternal{query: query, resp: &er}
		case 'A':
			if err := s.writeClient(msg); err != nil {
				return nil, err
			}
		case 'S':
			name, rest, _ := cstring(body(msg))
			val, _, _ := cstring(rest)
			s.mu.Lock()
			sc.params[name] = val
			diff := s.paramDiffLocked(map[string]string{name: val})
			s.mu.Unlock()
			if len(diff) > 0 {
				if err := s.writeClient(diff); err != nil {
					return nil, err
				}
			}
		case 'Z':
			s.mu.Lock()
			sc.txStatus = msg[5]
			s.mu.Unlock()
			return rows, qerr
		}
	}
}

// capture reads sc's session state. sc must be detached and idle.
func (s *session) capture(ctx context.Context, sc *serverConn) (*sessionState, error) {
	rows, err := s.internalQuery(ctx, sc, captureSQL)
	if err != nil {
		return nil, fmt.Errorf("read session state on the %s server: %w", sc.role, err)
	}
	if len(rows) != 1 || len(rows[0]) != 8 {
		return nil, errors.New("read session state: unexpected result")
	}
	r := rows[0]
	st := &sessionState{settings: map[string]string{}}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	if err := json.Unmarshal([]byte(str(r[0])), &st.settings); err != nil {
		return nil, fmt.Errorf("read session settings: %w", err)
	}
	st.role, st.sessionUser = str(r[1]), str(r[2])
	if err := json.Unmarshal([]byte(str(r[3])), &st.listen); err != nil {
		return nil, fmt.Errorf("read LISTEN channels: %w", err)
	}
	if err := json.Unmarshal([]byte(str(r[4])), &st.sqlPrepared); err != nil {
		return nil, fmt.Errorf("read prepared statements: %w", err)
	}
	if n := str(r[5]); n != "0" {
		st.unmovable = append(st.unmovable, n+" temporary objects")
	}
	if n := str(r[6]); n != "0" {
		st.unmovable = append(st.unmovable, n+" WITH HOLD cursors")
	}
	if n := str(r[7]); n != "0" {
		st.unmovable = append(st.unmovable, n+" advisory locks")
	}
	for _, p := range st.sqlPrepared {
		c := s.p.classifier().Classify(p)
		if !c.SessionState || c.TxControl || !strings.HasPrefix(strings.ToLower(strings.TrimSpace(p)), "prepare") {
			st.unmovable = append(st.unmovable, "a SQL prepared statement created in a multi-statement query")
			break
		}
	}
	return st, nil
}

// replay gives sc the captured state: session authorization, settings, role, and (unless only
// reads will run there) LISTEN channels and SQL prepared statements.
func (s *session) replay(ctx context.Context, sc *serverConn, st *sessionState, readsOnly bool) error {
	if st.sessionUser != "" && st.sessionUser != s.user {
		if _, err := s.internalQuery(ctx, sc, `SELECT set_config('session_authorization', $1, false)`, st.sessionUser); err != nil {
			return fmt.Errorf("replay SET SESSION AUTHORIZATION: %w", err)
		}
	}
	if len(st.settings) > 0 {
		settings := st.settings
		if readsOnly {
			// The read connection stays read-only whatever the session set.
			settings = make(map[string]string, len(st.settings))
			for k, v := range st.settings {
				if k != "default_transaction_read_only" {
					settings[k] = v
				}
			}
		}
		js, err := json.Marshal(settings)
		if err != nil {
			return err
		}
		if _, err := s.internalQuery(ctx, sc, `SELECT set_config(key, value, false) FROM jsonb_each_text($1::jsonb)`, string(js)); err != nil {
			return fmt.Errorf("replay session settings: %w", err)
		}
	}
	if st.role != "" && st.role != "none" {
		if _, err := s.internalQuery(ctx, sc, `SELECT set_config('role', $1, false)`, st.role); err != nil {
			return fmt.Errorf("replay SET ROLE: %w", err)
		}
	}
	if readsOnly {
		return nil
	}
	for _, ch := range st.listen {
		if _, err := s.internalQuery(ctx, sc, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return fmt.Errorf("replay LISTEN %s: %w", ch, err)
		}
	}
	for _, p := range st.sqlPrepared {
		if _, err := s.internalQuery(ctx, sc, p); err != nil {
			return fmt.Errorf("replay a SQL prepared statement: %w", err)
		}
	}
	return nil
}

// syncState brings a read connection's settings up to the primary's, at version. The session
// is idle (a unit is being started), so both readers can be detached.
func (s *session) syncState(ctx context.Context, sc *serverConn, version uint64) error {
	s.mu.Lock()
	primary := s.conns[s.primary]
	s.mu.Unlock()
	st := &sessionState{}
	if primary != nil && primary != sc {
		s.detach(primary)
		var err error
		st, err = s.capture(ctx, primary)
		s.startReader(primary)
		if err != nil {
			return err
		}
	}
	s.detach(sc)
	err := s.replay(ctx, sc, st, true)
	s.startReader(sc)
	if err != nil {
		return err
	}
	s.mu.Lock()
	sc.stateVersion = version
	s.mu.Unlock()
	return nil
}
