package cutover

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestSyncSequencesMargin: sequences set on the side traffic moves to keep is_called, move by
// the margin in their own direction, and stay within their bounds.
func TestSyncSequencesMargin(t *testing.T) {
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "seq")
	ctx := context.Background()
	schema := `CREATE SEQUENCE up; CREATE SEQUENCE down INCREMENT -1 MINVALUE -100 MAXVALUE -1 START -1;
		CREATE SEQUENCE fresh; CREATE SEQUENCE capped MAXVALUE 1000;`
	for _, c := range []*pgtest.Cluster{src, dst} {
		if out, err := c.Psql(ctx, "seq", schema); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	if out, err := src.Psql(ctx, "seq", `SELECT setval('up', 500); SELECT setval('down', -40); SELECT setval('capped', 995)`); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	from, err := pgx.Connect(ctx, srcDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close(ctx)
	to, err := pgx.Connect(ctx, dstDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer to.Close(ctx)
	n, err := syncSequences(ctx, from, to, config.TableFilter{}, 10)
	if err != nil || n != 4 {
		t.Fatalf("synced %d: %v", n, err)
	}
	for seq, want := range map[string]string{"up": "510|true", "down": "-50|true", "fresh": "11|false", "capped": "1000|true"} {
		got, err := dst.Psql(ctx, "seq", `SELECT last_value || '|' || is_called FROM `+seq)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s on the target: %s, want %s", seq, got, want)
		}
	}
}
