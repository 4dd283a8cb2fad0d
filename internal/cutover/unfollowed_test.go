package cutover

import (
	"context"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestCutoverBringsWhatDecodingDoesNot: large objects and unlogged tables are not in the
// logical stream. Written after the copy, they reached the target only if the cutover's pause
// brought them (a large object created, one changed, one removed; rows of an unlogged table
// with recopy_unlogged), judged by the test's own SQL on both sides.
func TestCutoverBringsWhatDecodingDoesNot(t *testing.T) {
	e := newEnvWith(t, func(ctx context.Context, src *pgtest.Cluster) {
		if out, err := src.Psql(ctx, "shop", `CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text);
			INSERT INTO scratch VALUES (1, 'copied');
			SELECT lo_from_bytea(0, 'kept'::bytea), lo_from_bytea(424242, 'to change'::bytea), lo_from_bytea(434343, 'to remove'::bytea);`); err != nil {
			t.Fatalf("setup: %v %s", err, out)
		}
	}, func(c *config.Config) { c.RecopyUnlogged = true })
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e.q(e.src, `INSERT INTO scratch VALUES (2, 'after the copy'); UPDATE scratch SET v = 'changed' WHERE id = 1`)
	e.q(e.src, `SELECT lo_from_bytea(454545, 'new'::bytea); SELECT lo_put(424242, 0, 'changed!!'::bytea); SELECT lo_unlink(434343)`)
	r, err := e.agent.engine.Cutover(ctx, false)
	if err != nil {
		t.Fatalf("cutover: %v", err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeDone {
		t.Fatalf("cutover: %s (%s)", r.Outcome, r.Error)
	}
	const los = `SELECT string_agg(oid::text || '=' || md5(lo_get(oid)), ' ' ORDER BY oid) FROM pg_largeobject_metadata`
	if s, d := e.q(e.src, los), e.q(e.dst, los); s != d {
		t.Errorf("large objects: source %s, target %s", s, d)
	}
	const rows = `SELECT string_agg(id || ':' || v, ' ' ORDER BY id) FROM scratch`
	if s, d := e.q(e.src, rows), e.q(e.dst, rows); s != d {
		t.Errorf("unlogged table: source %q, target %q", s, d)
	}
	// And back at rollback: what was written on the target since the switch.
	e.q(e.dst, `INSERT INTO scratch VALUES (3, 'on the target'); SELECT lo_from_bytea(464646, 'made on the target'::bytea)`)
	r, err = e.agent.engine.Rollback(ctx)
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeDone {
		t.Fatalf("rollback: %s (%s)", r.Outcome, r.Error)
	}
	if s, d := e.q(e.src, los), e.q(e.dst, los); s != d {
		t.Errorf("large objects after rollback: source %s, target %s", s, d)
	}
	if s, d := e.q(e.src, rows), e.q(e.dst, rows); s != d {
		t.Errorf("unlogged table after rollback: source %q, target %q", s, d)
	}
}
