package snapshot

// Unlogged tables: their rows are copied with the others, but their changes are never written
// to the WAL, so no publication carries them and the target's copy goes stale. The user may
// have them copied again during the cutover pause (RecopyUnlogged), when the source accepts no
// more writes; otherwise the report says they are stale.

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/progress"
)

// UnloggedNote is what the copy says about an unlogged table: always reported, with its size
// (what a re-copy in the cutover pause costs) and what recopy (--recopy-unlogged) does.
func UnloggedNote(t catalog.Table, recopy bool) string {
	size := progress.HumanBytes(t.TotalBytes)
	if recopy {
		return fmt.Sprintf("UNLOGGED table %s (%s): copied now; its changes are not in the WAL and cannot be followed, so the cutover pause copies it again (--recopy-unlogged), which takes the time of copying %s",
			t.ID, size, size)
	}
	return fmt.Sprintf("UNLOGGED table %s (%s): copied once; its changes are not in the WAL and CANNOT be followed, so it will be stale on the target — pass --recopy-unlogged (config: recopy_unlogged) to copy it again during the cutover pause, make it logged (ALTER TABLE %s SET LOGGED), or exclude it",
		t.ID, size, t.ID.Sanitize())
}

// RecopyResult is what RecopyUnlogged did.
type RecopyResult struct {
	Tables      int
	Rows, Bytes int64
	Took        time.Duration
}

// RecopyUnlogged copies the unlogged tables among tables again, whole, from one source
// snapshot: for each, in one target transaction, the target's rows are removed and the source's
// copied in, so a failure leaves the previous copy. Rows are removed with TRUNCATE ONLY, or
// with DELETE (foreign keys not firing, session_replication_role = replica) when another table
// references the table, since TRUNCATE refuses that. binary allows COPY's binary format (same
// major version on both sides). For the cutover pause, when nothing writes to the source.
func RecopyUnlogged(ctx context.Context, src, dst db.Endpoint, tables []catalog.Table, binary bool) (RecopyResult, error) {
	start := time.Now()
	var res RecopyResult
	var todo []*catalog.Table
	for i := range tables {
		if tables[i].HoldsData() && tables[i].Persistence == 'u' {
			todo = append(todo, &tables[i])
		}
	}
	if len(todo) == 0 {
		return res, nil
	}
	srcConn, err := src.Connect(ctx)
	if err != nil {
		return res, err
	}
	defer srcConn.Close(context.WithoutCancel(ctx))
	for _, s := range append(append([]string{}, sessionSettings...), "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY") {
		if _, err := srcConn.Exec(ctx, s); err != nil {
			return res, fmt.Errorf("re-copy unlogged tables: %w", src.Describe(err))
		}
	}
	dstConn, err := dst.Connect(ctx)
	if err != nil {
		return res, err
	}
	defer dstConn.Close(context.WithoutCancel(ctx))
	for _, s := range sessionSettings {
		if _, err := dstConn.Exec(ctx, s); err != nil {
			return res, fmt.Errorf("re-copy unlogged tables: %w", dst.Describe(err))
		}
	}
	for _, t := range todo {
		rows, bytes, err := recopyTable(ctx, srcConn, dstConn, t, binary)
		if err != nil {
			return res, fmt.Errorf("re-copy unlogged table %s: %w", t.ID, err)
		}
		res.Tables++
		res.Rows += rows
		res.Bytes += bytes
	}
	res.Took = time.Since(start)
	return res, nil
}

func recopyTable(ctx context.Context, src, dst *pgx.Conn, t *catalog.Table, binary bool) (rows, bytes int64, err error) {
	tx, err := dst.Begin(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after Commit
	var referenced bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' AND confrelid = $1::text::regclass AND conrelid <> confrelid)`,
		t.ID.Sanitize()).Scan(&referenced); err != nil {
		return 0, 0, err
	}
	empty := "TRUNCATE ONLY " + t.ID.Sanitize()
	if referenced {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return 0, 0, err
		}
		empty = "DELETE FROM ONLY " + t.ID.Sanitize()
	}
	if _, err := tx.Exec(ctx, empty); err != nil {
		return 0, 0, fmt.Errorf("empty it on the target: %w", err)
	}
	out, in := CopySQL(Chunk{Table: t, Whole: true, Of: 1}, binary)
	pr, pw := io.Pipe()
	var g errgroup.Group
	var n int64
	g.Go(func() error {
		cw := &countingWriter{w: pw, n: &n}
		_, err := src.PgConn().CopyTo(ctx, cw, out)
		pw.CloseWithError(err)
		if err != nil {
			return fmt.Errorf("copy out of the source: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		tag, err := dst.PgConn().CopyFrom(ctx, pr, in)
		if err != nil {
			pr.CloseWithError(err)
			return fmt.Errorf("copy into the target: %w", err)
		}
		rows = tag.RowsAffected()
		return nil
	})
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, err
	}
	return rows, n, nil
}
