package state

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

func TestMigrationLifecycle(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	_, conn := c.NewDB(t, "st")

	if _, err := Load(ctx, conn); !errors.Is(err, ErrNoMigration) {
		t.Fatalf("empty database: want ErrNoMigration, got %v", err)
	}
	if err := Ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := Ensure(ctx, conn); err != nil {
		t.Fatalf("Ensure must be idempotent: %v", err)
	}
	if _, err := Load(ctx, conn); !errors.Is(err, ErrNoMigration) {
		t.Fatalf("schema without row: want ErrNoMigration, got %v", err)
	}
	m := Migration{SourceSystemID: "42", SourceDatabase: "app", Slot: "pgshift_app", Publication: "pgshift_app", Phase: pgtypes.PhaseSchema}
	if err := Create(ctx, conn, m); err != nil {
		t.Fatal(err)
	}
	if err := Create(ctx, conn, m); err == nil {
		t.Fatal("a second migration row was accepted")
	}
	if err := SetConsistentLSN(ctx, conn, 0x1_0000_0AB0); err != nil {
		t.Fatal(err)
	}
	if err := SetPhase(ctx, conn, pgtypes.PhaseData); err != nil {
		t.Fatal(err)
	}
	if err := SetPhase(ctx, conn, pgtypes.PhaseSchema); err == nil {
		t.Fatal("phase moved backwards")
	}
	got, err := Load(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if got.Phase != pgtypes.PhaseData || got.ConsistentLSN != 0x1_0000_0AB0 || got.Slot != "pgshift_app" || got.SourceSystemID != "42" {
		t.Fatalf("loaded %+v", got)
	}

	// The position commits or vanishes with the transaction that carries it.
	if p, err := LoadPosition(ctx, conn); err != nil || p.AppliedLSN != 0 {
		t.Fatalf("initial position %+v %v", p, err)
	}
	commit := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := SavePosition(ctx, tx, 0x2000, commit); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	if p, _ := LoadPosition(ctx, conn); p.AppliedLSN != 0 {
		t.Fatalf("rolled-back position visible: %s", p.AppliedLSN)
	}
	tx, _ = conn.Begin(ctx)
	if err := SavePosition(ctx, tx, 0x2000, commit); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPosition(ctx, conn)
	if err != nil || p.AppliedLSN != 0x2000 || !p.CommitTime.Equal(commit) {
		t.Fatalf("position %+v %v", p, err)
	}

	if err := Drop(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ctx, conn); !errors.Is(err, ErrNoMigration) {
		t.Fatalf("after Drop: %v", err)
	}
}
