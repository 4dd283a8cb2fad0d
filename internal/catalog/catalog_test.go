package catalog

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

const fixture = `
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Order" (id bigint PRIMARY KEY, "select" text, total numeric(12,2),
    doubled numeric GENERATED ALWAYS AS (total * 2) STORED);
CREATE TABLE public.nopk (a int, b text);
CREATE TABLE public.full_ident (a int, b text);
ALTER TABLE public.full_ident REPLICA IDENTITY FULL;
CREATE TABLE public.holes (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, gone int, keep text);
ALTER TABLE public.holes DROP COLUMN gone;
CREATE TABLE public.uidx (a int NOT NULL, b int NOT NULL, c text);
CREATE UNIQUE INDEX uidx_ab ON public.uidx (b, a);
ALTER TABLE public.uidx REPLICA IDENTITY USING INDEX uidx_ab;
CREATE TABLE public.events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE UNLOGGED TABLE public.scratch (x int);
CREATE MATERIALIZED VIEW public.mv AS SELECT 1 AS one;
CREATE SEQUENCE public.free_seq START 100;
SELECT setval('public.free_seq', 150);
CREATE SCHEMA pgshift; CREATE TABLE pgshift.hidden (x int);
`

func TestTablesAndSequences(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	_, conn := c.NewDB(t, "cat")
	if _, err := conn.Exec(ctx, fixture); err != nil {
		t.Fatal(err)
	}
	tables, err := Tables(ctx, conn, config.TableFilter{})
	if err != nil {
		t.Fatal(err)
	}
	by := map[pgtypes.TableID]Table{}
	for _, tb := range tables {
		by[tb.ID] = tb
	}
	if _, ok := by[pgtypes.TableID{Schema: "pgshift", Name: "hidden"}]; ok {
		t.Error("pgshift schema listed")
	}
	order := by[pgtypes.TableID{Schema: "My Schema", Name: "Order"}]
	if len(order.PrimaryKey) != 1 || order.PrimaryKey[0] != "id" || !order.HasUsableIdentity() {
		t.Errorf("Order keys: %+v", order)
	}
	if cc := order.CopyColumns(); len(cc) != 3 || len(order.Columns) != 4 {
		t.Errorf("generated column not excluded from copy: %+v", cc)
	}
	if by[pgtypes.TableID{Schema: "public", Name: "nopk"}].HasUsableIdentity() {
		t.Error("nopk has no usable identity")
	}
	if !by[pgtypes.TableID{Schema: "public", Name: "full_ident"}].HasUsableIdentity() {
		t.Error("REPLICA IDENTITY FULL is usable")
	}
	holes := by[pgtypes.TableID{Schema: "public", Name: "holes"}]
	if len(holes.Columns) != 2 || holes.Columns[1].Num != 3 || holes.Columns[0].Identity != "a" {
		t.Errorf("dropped column hole: %+v", holes.Columns)
	}
	u := by[pgtypes.TableID{Schema: "public", Name: "uidx"}]
	if u.ReplicaIdentity != 'i' || len(u.IdentityKey) != 2 || u.IdentityKey[0] != "b" {
		t.Errorf("identity index key: %+v", u.IdentityKey)
	}
	leaf := by[pgtypes.TableID{Schema: "public", Name: "events_2024"}]
	if !leaf.IsPartition || leaf.Parent.Name != "events" || !leaf.HoldsData() {
		t.Errorf("partition: %+v", leaf)
	}
	if p := by[pgtypes.TableID{Schema: "public", Name: "events"}]; p.Kind != KindPartitioned || p.HoldsData() {
		t.Errorf("partitioned parent: %+v", p)
	}
	if by[pgtypes.TableID{Schema: "public", Name: "scratch"}].Persistence != 'u' {
		t.Error("unlogged not seen")
	}
	if by[pgtypes.TableID{Schema: "public", Name: "mv"}].Kind != KindMatView {
		t.Error("matview not seen")
	}
	filtered, err := Tables(ctx, conn, config.TableFilter{Include: []string{"My Schema.*"}})
	if err != nil || len(filtered) != 1 {
		t.Errorf("filter: %d tables, %v", len(filtered), err)
	}
	seqs, err := Sequences(ctx, conn, config.TableFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var free, ident *Sequence
	for i := range seqs {
		switch seqs[i].ID.Name {
		case "free_seq":
			free = &seqs[i]
		case "holes_id_seq":
			ident = &seqs[i]
		}
	}
	if free == nil || free.LastValue != 150 || !free.IsCalled || free.OwnedBy != "" {
		t.Errorf("free_seq: %+v", free)
	}
	if ident == nil || ident.IsCalled || ident.OwnedBy != "public.holes.id" {
		t.Errorf("identity sequence: %+v", ident)
	}
	// A plain (non-superuser) role must be able to read server info.
	if _, err := conn.Exec(ctx, `CREATE ROLE plain LOGIN`); err != nil {
		t.Fatal(err)
	}
	pc, err := pgx.Connect(ctx, c.DSN("cat")+" user=plain")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(ctx)
	info, err := Server(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	if info.VersionNum < 100000 || info.Database != "cat" || info.Superuser || info.SystemID == "" {
		t.Errorf("server info: %+v", info)
	}
}
