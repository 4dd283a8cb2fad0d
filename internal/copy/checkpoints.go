package copy

import (
	"context"
	"fmt"
	"time"

	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/plan"
)

// checkpointWarning says, before the data moves, when the target's max_wal_size would make
// the copy checkpoint more often than PostgreSQL's checkpoint_warning (30 s): every
// WAL-triggered checkpoint writes all dirty buffers and restarts full-page images in the
// middle of the load (on bench/plan.sh's 2-core machine the copy time did not measurably
// change; the checkpoints and the server's warnings did). The copy's WAL rate is
// the fast end of assess's estimate with its default rates, so the warning errs towards
// being given; the number it names is plan's (plan.LoadMaxWALSize), the one `pgshift plan`
// recommends. It returns "" when the target's setting is enough. It changes nothing: the
// setting is the server's, and the user's to change.
func checkpointWarning(ctx context.Context, dst catalog.Querier, tables []catalog.Table, jobs int) (string, error) {
	in := assess.EstimateInput{Jobs: jobs}
	for _, t := range tables {
		if t.HoldsData() {
			in.DataBytes += t.HeapBytes + t.ToastBytes
			in.IndexBytes += t.IndexBytes
			in.Objects++
		}
	}
	copyWAL := plan.CopyWAL(in.DataBytes, in.IndexBytes)
	est := assess.EstimateCopy(in)
	if copyWAL <= 0 || est.LowSeconds <= 0 {
		return "", nil
	}
	var maxWAL int64
	var completion float64
	if err := dst.QueryRow(ctx, `SELECT pg_size_bytes(current_setting('max_wal_size')), current_setting('checkpoint_completion_target')::float8`).
		Scan(&maxWAL, &completion); err != nil {
		return "", fmt.Errorf("read the target's max_wal_size: %w", err)
	}
	perCheckpoint := int64(float64(maxWAL) / (1 + completion))
	rate := float64(copyWAL) / est.LowSeconds
	every := plan.CheckpointEvery(maxWAL, completion, rate)
	if copyWAL <= perCheckpoint || every >= plan.CheckpointWarning {
		return "", nil
	}
	want := plan.LoadMaxWALSize(copyWAL, est.LowSeconds, plan.LoadCheckpointTimeout)
	return fmt.Sprintf("target: max_wal_size is %dMB: the copy writes about %dMB of WAL, at up to %dMB/s, so the target would checkpoint as often as every %s "+
		"(PostgreSQL logs \"checkpoints are occurring too frequently\"), each one flushing every dirty buffer in the middle of the load; "+
		"set it for the copy: ALTER SYSTEM SET max_wal_size = '%dGB'; SELECT pg_reload_conf(); on the target (pgshift plan gives the other settings)",
		maxWAL>>20, copyWAL>>20, int64(rate)>>20, every.Round(10*time.Millisecond), want>>30), nil
}
