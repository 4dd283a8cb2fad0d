package snapshot

import (
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

func table(name string, heap int64) *catalog.Table {
	return &catalog.Table{ID: pgtypes.TableID{Schema: "public", Name: name}, Kind: catalog.KindTable, HeapBytes: heap,
		Columns: []catalog.Column{{Name: "id", TypeOID: 23}}}
}

func TestPlanSplitsAndPacks(t *testing.T) {
	const mb = 1 << 20
	big := table("big", 1000*mb)
	mid := table("mid", 100*mb)
	var tiny []*catalog.Table
	for i := 0; i < 50; i++ {
		tiny = append(tiny, table("tiny"+string(rune('a'+i%26))+string(rune('a'+i/26)), 64<<10))
	}
	items := Plan(append([]*catalog.Table{big, mid}, tiny...), PlanOptions{ChunkBytes: 128 * mb, Jobs: 4})

	// big is split into ceil(1000/128) = 8 contiguous ctid ranges, the last open-ended.
	var chunks []Chunk
	packed := 0
	for _, it := range items {
		for _, c := range it.Chunks {
			switch c.Table.ID.Name {
			case "big":
				if len(it.Chunks) != 1 {
					t.Errorf("a chunk of big shares its item: %v", it)
				}
				chunks = append(chunks, c)
			case "mid":
				if !c.Whole {
					t.Errorf("mid (below 1.5 chunks) was split")
				}
			default:
				packed++
				if len(it.Chunks) == 1 {
					t.Errorf("tiny table %s alone in an item", c.Table.ID)
				}
			}
		}
	}
	if len(chunks) != 8 || packed != 50 {
		t.Fatalf("big in %d chunks, %d tiny tables packed", len(chunks), packed)
	}
	var next int64
	for i, c := range chunks {
		if c.No != i || c.Of != 8 || c.FromPage != next || c.Whole {
			t.Errorf("chunk %d: %+v (want from page %d)", i, c, next)
		}
		next = c.ToPage
		if i == 7 && c.ToPage >= 0 {
			t.Errorf("last chunk is bounded: %+v", c)
		}
	}
	if w := chunks[0].Where(); w != "ctid >= '(0,0)'::tid AND ctid < '(16000,0)'::tid" {
		t.Errorf("first chunk WHERE %s", w)
	}
	if w := chunks[7].Where(); !strings.HasPrefix(w, "ctid >= '(") || strings.Contains(w, "<") {
		t.Errorf("last chunk WHERE %s", w)
	}
	for i := 1; i < len(items); i++ {
		if items[i].Bytes > items[i-1].Bytes {
			t.Errorf("items not largest first at %d", i)
		}
	}
}

func TestPlanSpreadsFewTablesOverWorkers(t *testing.T) {
	// One 200 MB table and 8 workers: split finer than the 256 MB default chunk.
	items := Plan([]*catalog.Table{table("only", 200<<20)}, PlanOptions{Jobs: 8})
	if len(items) < 8 {
		t.Errorf("%d items for 8 workers", len(items))
	}
	// Empty and one-page tables are never split.
	items = Plan([]*catalog.Table{table("empty", 0), table("page", 8192)}, PlanOptions{ChunkBytes: 1})
	for _, it := range items {
		for _, c := range it.Chunks {
			if !c.Whole {
				t.Errorf("%s split", c.Table.ID)
			}
		}
	}
}

func TestCopySQL(t *testing.T) {
	tb := &catalog.Table{ID: pgtypes.TableID{Schema: "Odd Schema", Name: "Order"}, Columns: []catalog.Column{
		{Name: "select", TypeOID: 23},
		{Name: "gen", TypeOID: 23, Generated: true},
		{Name: `we"ird`, TypeOID: 25},
	}}
	out, in := CopySQL(Chunk{Table: tb, Whole: true, Of: 1}, true)
	if out != `COPY "Odd Schema"."Order" ("select", "we""ird") TO STDOUT WITH (FORMAT binary)` ||
		in != `COPY "Odd Schema"."Order" ("select", "we""ird") FROM STDIN WITH (FORMAT binary)` {
		t.Errorf("whole: %s | %s", out, in)
	}
	out, _ = CopySQL(Chunk{Table: tb, FromPage: 10, ToPage: 20, Of: 3}, false)
	if out != `COPY (SELECT "select", "we""ird" FROM ONLY "Odd Schema"."Order" WHERE ctid >= '(10,0)'::tid AND ctid < '(20,0)'::tid) TO STDOUT` {
		t.Errorf("chunk: %s", out)
	}
	// A user type (OID from 16384 up) forces text format: binary embeds server-specific OIDs.
	tb.Columns = append(tb.Columns, catalog.Column{Name: "mood", TypeOID: 16390})
	if out, in := CopySQL(Chunk{Table: tb, Whole: true}, true); strings.Contains(out+in, "binary") {
		t.Errorf("binary with a user type: %s", out)
	}
	// No copyable column: rows still counted.
	empty := &catalog.Table{ID: pgtypes.TableID{Schema: "s", Name: "t"}}
	if out, in := CopySQL(Chunk{Table: empty, Whole: true}, false); out != `COPY (SELECT FROM ONLY "s"."t") TO STDOUT` || in != `COPY "s"."t" FROM STDIN` {
		t.Errorf("no columns: %s | %s", out, in)
	}
}

func TestNames(t *testing.T) {
	for db, want := range map[string]string{"shop": "pgshift_shop", "My-DB.prod": "pgshift_my_db_prod", strings.Repeat("x", 80): "pgshift_" + strings.Repeat("x", 55)} {
		if got := DefaultName(db); got != want {
			t.Errorf("DefaultName(%q) = %q, want %q", db, got, want)
		}
		if err := ValidSlotName(DefaultName(db)); err != nil {
			t.Error(err)
		}
	}
	if ValidSlotName("Bad-Name") == nil || ValidSlotName("") == nil {
		t.Error("invalid slot names accepted")
	}
}

func TestPublicationTables(t *testing.T) {
	tables := []catalog.Table{
		{ID: pgtypes.TableID{Schema: "p", Name: "plain"}, Kind: catalog.KindTable, Persistence: 'p'},
		{ID: pgtypes.TableID{Schema: "p", Name: "root"}, Kind: catalog.KindPartitioned, Persistence: 'p'},
		{ID: pgtypes.TableID{Schema: "p", Name: "leaf"}, Kind: catalog.KindTable, Persistence: 'p', IsPartition: true},
		{ID: pgtypes.TableID{Schema: "p", Name: "unlogged"}, Kind: catalog.KindTable, Persistence: 'u'},
		{ID: pgtypes.TableID{Schema: "p", Name: "foreign"}, Kind: catalog.KindForeign, Persistence: 'p'},
		{ID: pgtypes.TableID{Schema: "p", Name: "mv"}, Kind: catalog.KindMatView, Persistence: 'p'},
	}
	got := PublicationTables(tables, 150000)
	if len(got) != 2 || got[0].Name != "plain" || got[1].Name != "root" {
		t.Errorf("published %v", got)
	}
	// 12 cannot publish a partitioned table: its leaves are named instead.
	got = PublicationTables(tables, 120022)
	if len(got) != 2 || got[0].Name != "plain" || got[1].Name != "leaf" {
		t.Errorf("published on 12: %v", got)
	}
}
