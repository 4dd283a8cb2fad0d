package snapshot

import (
	"fmt"
	"sort"

	"github.com/pgshift/pgshift/internal/catalog"
)

// pageSize is PostgreSQL's default block size; a ctid's block number counts in these.
const pageSize = 8192

// Chunk is part of one table: the heap pages [FromPage, ToPage) as a ctid range, or the whole
// table when Whole is set. The last chunk of a split table is open-ended (ToPage < 0) so rows
// on pages added after planning are still copied — the snapshot decides which rows are seen,
// the ranges only divide them.
type Chunk struct {
	Table    *catalog.Table
	No       int // 0-based within the table
	Of       int // number of chunks of the table
	Whole    bool
	FromPage int64
	ToPage   int64 // exclusive; < 0 means no upper bound
	Bytes    int64 // estimated
}

// Where returns the chunk's ctid condition ("" for a whole table). A ctid range in the WHERE
// clause is a TID Range Scan (PostgreSQL 14+): only those pages are read.
func (c Chunk) Where() string {
	if c.Whole {
		return ""
	}
	w := fmt.Sprintf("ctid >= '(%d,0)'::tid", c.FromPage)
	if c.ToPage >= 0 {
		w += fmt.Sprintf(" AND ctid < '(%d,0)'::tid", c.ToPage)
	}
	return w
}

// WorkItem is what one worker copies in one target transaction: a chunk of a big table, or
// several small tables packed together so thousands of tiny tables do not cost a commit each.
type WorkItem struct {
	Chunks []Chunk
	Bytes  int64
}

// PlanOptions size the chunks.
type PlanOptions struct {
	// ChunkBytes is the target size of one chunk (default 256 MiB). Tables larger than 1.5
	// chunks are split; tables below ChunkBytes/16 are packed together up to ChunkBytes.
	ChunkBytes int64
	// Jobs is the number of workers: big tables are split finer when there are fewer of them
	// than workers, so every worker has something to do.
	Jobs int
	// Whole copies every table in one piece: a source without TID range scans (before 14,
	// catalog.Version.HasTIDRangeScan) reads the whole table for each ctid range, so N chunks
	// of a table would read it N times.
	Whole bool
}

// Plan divides tables (those that hold rows) into work items, largest first so the longest
// items start first and the end of the copy is not one worker finishing a giant table alone.
func Plan(tables []*catalog.Table, opts PlanOptions) []WorkItem {
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = 256 << 20
	}
	if opts.Jobs < 1 {
		opts.Jobs = 1
	}
	var total int64
	for _, t := range tables {
		total += tableBytes(t)
	}
	chunkBytes := opts.ChunkBytes
	// With few big tables, aim for at least ~2 items per worker so the work spreads evenly.
	if per := total / int64(2*opts.Jobs); per > 0 && per < chunkBytes {
		chunkBytes = max(per, 16<<20)
	}
	small := chunkBytes / 16
	var items []WorkItem
	var pack WorkItem
	for _, t := range tables {
		size := tableBytes(t)
		pages := t.HeapBytes / pageSize
		switch {
		case !opts.Whole && size > chunkBytes+chunkBytes/2 && pages > 1:
			n := int((size + chunkBytes - 1) / chunkBytes)
			if int64(n) > pages {
				n = int(pages)
			}
			for i := 0; i < n; i++ {
				c := Chunk{Table: t, No: i, Of: n, FromPage: pages * int64(i) / int64(n), ToPage: pages * int64(i+1) / int64(n), Bytes: size / int64(n)}
				if i == n-1 {
					c.ToPage = -1
				}
				items = append(items, WorkItem{Chunks: []Chunk{c}, Bytes: c.Bytes})
			}
		case size < small:
			if pack.Bytes+size > chunkBytes && len(pack.Chunks) > 0 {
				items = append(items, pack)
				pack = WorkItem{}
			}
			pack.Chunks = append(pack.Chunks, Chunk{Table: t, Of: 1, Whole: true, Bytes: size})
			pack.Bytes += size
		default:
			items = append(items, WorkItem{Chunks: []Chunk{{Table: t, Of: 1, Whole: true, Bytes: size}}, Bytes: size})
		}
	}
	if len(pack.Chunks) > 0 {
		items = append(items, pack)
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].Bytes > items[j].Bytes })
	return items
}

// tableBytes is the size a table's copy streams: its heap and its out-of-line (TOAST) values.
func tableBytes(t *catalog.Table) int64 { return t.HeapBytes + t.ToastBytes }
