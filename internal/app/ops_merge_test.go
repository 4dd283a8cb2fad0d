package app

import (
	"context"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestOpsAssessAndCopyAgreeOnCopyOptions: the copy options that change a rule's verdict
// (replica_identity_full, recopy_unlogged) change assess's the same way, since copy's preflight
// evaluates assess's rules. With replica_identity_full a keyless table is no blocker in assess
// either (it warned of a blocker while copy went ahead); with recopy_unlogged assess says the
// unlogged table is copied again at cutover, as copy does; large objects are said to be copied
// (assess said they were not, while copy copies them).
func TestOpsAssessAndCopyAgreeOnCopyOptions(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	ctx := context.Background()
	e := emptyTargetEnv(t, src, dst, "agreeopts", `
		CREATE TABLE accounts (id int PRIMARY KEY, balance int);
		CREATE TABLE events (at int, kind text);
		INSERT INTO events SELECT g, 'k' FROM generate_series(1, 50) g;
		CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
		SELECT lo_from_bytea(0, 'scanned invoice');`)

	rep, by := assessFindings(t, e.cfg)
	if rep.Ready || len(by[assess.CodeNoReplicaIdentity]) != 1 || by[assess.CodeNoReplicaIdentity][0].Severity != assess.Blocker {
		t.Errorf("assess of a keyless table without replica_identity_full: ready %v, %+v", rep.Ready, by[assess.CodeNoReplicaIdentity])
	}
	if _, err := Copy(ctx, e.cfg, CopyOptions{NoProgress: true}, testLogger(t)); err == nil || !strings.Contains(err.Error(), "public.events") ||
		!strings.Contains(err.Error(), "--replica-identity-full") {
		t.Fatalf("copy of a keyless table without --replica-identity-full: %v", err)
	}
	if f := by[assess.CodeLargeObjects]; len(f) != 1 || !strings.Contains(f[0].Message, "copied in the snapshot") {
		t.Errorf("assess on large objects: %+v", f)
	}

	e.cfg.ReplicaIdentityFull, e.cfg.RecopyUnlogged = true, true
	rep, by = assessFindings(t, e.cfg)
	if !rep.Ready {
		t.Errorf("assess with replica_identity_full is not ready: %+v", rep.Findings)
	}
	if f := by[assess.CodeNoReplicaIdentity]; len(f) != 1 || f[0].Severity != assess.Warning || !strings.Contains(f[0].Message, "REPLICA IDENTITY FULL") {
		t.Errorf("assess with replica_identity_full on the keyless table: %+v", f)
	}
	if f := by[assess.CodeUnloggedTable]; len(f) != 1 || !strings.Contains(f[0].Message, "cutover pause copies it again") {
		t.Errorf("assess with recopy_unlogged on the unlogged table: %+v", f)
	}
	sum, err := Copy(ctx, e.cfg, CopyOptions{NoProgress: true}, testLogger(t))
	if err != nil {
		t.Fatalf("copy with --replica-identity-full: %v", err)
	}
	warned := strings.Join(sum.Warnings, "\n")
	for _, want := range []string{"public.scratch: unlogged table", "cutover pause copies it again", "events has no key", "1 large object"} {
		if !strings.Contains(warned, want) {
			t.Errorf("copy's warnings lack %q:\n%s", want, warned)
		}
	}
	if sum.LargeObjects != 1 {
		t.Errorf("copy copied %d large objects, want 1", sum.LargeObjects)
	}
	if got := e.query(src, `SELECT relreplident::text FROM pg_class WHERE oid = 'public.events'::regclass`); got != "f" {
		t.Errorf("source identity of the keyless table after the copy: %s, want f", got)
	}
}
