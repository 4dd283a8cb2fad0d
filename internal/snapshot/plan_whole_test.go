package snapshot

import (
	"testing"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// TestPlanWhole: for a source without TID range scans (before 14) a big table is one work item,
// not ctid ranges that would each read all of it (copy of 193 MB from a 10 source in 8 MiB
// chunks with 2 jobs: 10.4 s in chunks, 5.0 s whole); small tables are still packed.
func TestPlanWhole(t *testing.T) {
	big := &catalog.Table{ID: pgtypes.TableID{Schema: "public", Name: "big"}, HeapBytes: 1 << 30, Kind: catalog.KindTable}
	var tables []*catalog.Table
	tables = append(tables, big)
	for i := range 3 {
		tables = append(tables, &catalog.Table{ID: pgtypes.TableID{Schema: "public", Name: string(rune('a' + i))}, HeapBytes: 8 << 10, Kind: catalog.KindTable})
	}
	split := Plan(tables, PlanOptions{ChunkBytes: 64 << 20, Jobs: 2})
	if len(split) < 10 {
		t.Fatalf("with TID range scans the big table should be split: %d items", len(split))
	}
	whole := Plan(tables, PlanOptions{ChunkBytes: 64 << 20, Jobs: 2, Whole: true})
	if len(whole) != 2 || len(whole[0].Chunks) != 1 || !whole[0].Chunks[0].Whole || whole[0].Chunks[0].Table != big || len(whole[1].Chunks) != 3 {
		t.Fatalf("Whole plan: %+v", whole)
	}
	if catalog.Version(130023).HasTIDRangeScan() || !catalog.Version(140000).HasTIDRangeScan() {
		t.Fatal("HasTIDRangeScan: from 14")
	}
}
