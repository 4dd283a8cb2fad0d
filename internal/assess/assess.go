package assess

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// Options tune an assessment.
type Options struct {
	Filter config.TableFilter
	// Jobs is the parallelism the copy-time estimate assumes (the --jobs of copy).
	Jobs int
	// SampleBytes caps the timed sample read of the largest table; 0 disables the measurement.
	SampleBytes int64
	// SourceName and TargetName are the endpoints' safe descriptions, printed in the report.
	SourceName, TargetName string
	Logger                 *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// StartOver: the copy this assessment is for starts the migration over (copy --force).
	StartOver bool
	// RecopyUnlogged: the copy copies unlogged tables again in the cutover pause
	// (--recopy-unlogged, config recopy_unlogged).
	RecopyUnlogged bool
	// ReplicaIdentityFull: the copy sets REPLICA IDENTITY FULL on tables with no key and no
	// usable identity instead of refusing them (--replica-identity-full, config
	// replica_identity_full).
	ReplicaIdentityFull bool
}

// DefaultSampleBytes is enough to measure a steady read rate and small enough to be harmless
// on a production server.
const DefaultSampleBytes = 32 << 20

// minSampleBytes: below this a table is read from cache in milliseconds and the rate means nothing.
const minSampleBytes = 4 << 20

// Run assesses the source, and the target when dst is not nil. It only reads. Errors mean the
// assessment could not be made (a query failed), never that the database is not ready:
// readiness is in the report's findings.
func Run(ctx context.Context, src, dst *pgx.Conn, opts Options) (Report, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	f, err := gather(ctx, src, dst, opts, log)
	if err != nil {
		return Report{}, err
	}
	in := EstimateInput{Jobs: opts.Jobs}
	for _, t := range f.Tables {
		if t.Kind == "table" {
			in.DataBytes += t.HeapBytes + t.ToastBytes
			in.IndexBytes += t.IndexBytes
			in.Objects += 1 + t.Indexes
		}
	}
	if opts.SampleBytes > 0 {
		if t, ok := sampleTable(f.Tables, f.Source.Superuser); ok {
			rate, read, err := measureRead(ctx, src, t, opts.SampleBytes)
			switch {
			case err != nil && ctx.Err() != nil:
				return Report{}, ctx.Err()
			case err != nil:
				// The estimate falls back to its stated defaults; the report says so.
				log.Warn("assess: sample read failed, estimate uses default rates", "table", t.ID(), "err", err)
			default:
				in.MeasuredBytesPerSec, in.MeasuredBytes, in.MeasuredTable = rate, read, t.ID()
			}
		}
	}
	return Build(f, EstimateCopy(in), now()), nil
}

// Preflight is the assessment copy makes before it creates anything: the facts Run reads
// (without the timed sample read and the estimate) and the same rule table, Evaluate. Its
// blockers are the ones `pgshift assess` reports, and copy refuses to start on any of them;
// opts.StartOver is copy --force (existing target tables are then no blocker).
func Preflight(ctx context.Context, src, dst *pgx.Conn, opts Options) ([]Finding, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := gather(ctx, src, dst, opts, log)
	if err != nil {
		return nil, err
	}
	return Evaluate(f), nil
}

// gather reads every fact the rules need from the source and, when dst is not nil, the target.
func gather(ctx context.Context, src, dst *pgx.Conn, opts Options, log *slog.Logger) (Facts, error) {
	srcName, dstName := cmp.Or(opts.SourceName, "source"), cmp.Or(opts.TargetName, "target")
	var f Facts
	var err error
	if f.Source, err = readServer(ctx, src); err != nil {
		return f, fmt.Errorf("%s: %w", srcName, err)
	}
	f.Source.Endpoint = srcName
	// A source too old to migrate from is refused before anything else is read (its catalogs
	// lack what the queries below ask for).
	if err := catalog.Version(f.Source.VersionNum).CheckSource(); err != nil {
		return f, fmt.Errorf("%s: %w", srcName, err)
	}
	if f.Tables, err = readTables(ctx, src, opts.Filter); err != nil {
		return f, fmt.Errorf("%s: %w", srcName, err)
	}
	if err := readSourceObjects(ctx, src, &f, opts.Filter); err != nil {
		return f, fmt.Errorf("%s: %w", srcName, err)
	}
	if dst != nil {
		t, err := readServer(ctx, dst)
		if err != nil {
			return f, fmt.Errorf("%s: %w", dstName, err)
		}
		t.Endpoint = dstName
		f.Target = &t
		if err := readTargetObjects(ctx, dst, &f); err != nil {
			return f, fmt.Errorf("%s: %w", dstName, err)
		}
		if f.TargetMigration, err = readTargetMigration(ctx, dst); err != nil {
			return f, fmt.Errorf("%s: %w", dstName, err)
		}
	}
	// After the target: a migration recorded there may name a slot without pgshift's prefix.
	if err := readPgshiftObjects(ctx, src, &f); err != nil {
		return f, fmt.Errorf("%s: %w", srcName, err)
	}
	log.Debug("assess: facts read", "tables", len(f.Tables), "extensions", len(f.Extensions))

	f.StartOver, f.RecopyUnlogged, f.ReplicaIdentityFull = opts.StartOver, opts.RecopyUnlogged, opts.ReplicaIdentityFull
	return f, nil
}

// Build assembles a report from facts and an estimate: findings, totals, verdict. It is pure.
func Build(f Facts, est Estimate, at time.Time) Report {
	r := Report{GeneratedAt: at.UTC(), Source: f.Source, Target: f.Target, Estimate: est}
	r.Tables = slices.Clone(f.Tables)
	slices.SortStableFunc(r.Tables, func(a, b Table) int { return cmp.Compare(b.TotalBytes, a.TotalBytes) }) // largest first
	if f.CopySeconds == 0 {
		f.CopySeconds = est.HighSeconds
	}
	r.Findings = Evaluate(f)
	for _, fd := range r.Findings {
		switch fd.Severity {
		case Blocker:
			r.Blockers++
		case Warning:
			r.Warnings++
		default:
			r.Infos++
		}
	}
	r.Ready = r.Blockers == 0
	tot := &r.Totals
	tot.Sequences = len(f.Sequences)
	for _, t := range f.Tables {
		tot.Tables++
		if t.RowsEstimate > 0 && t.Kind != "partitioned" {
			tot.RowsEstimate += t.RowsEstimate
		}
		// Partitioned parents hold nothing: their partitions are listed and counted themselves.
		if t.Kind != "partitioned" {
			tot.TotalBytes += t.TotalBytes
			tot.HeapBytes += t.HeapBytes
			tot.ToastBytes += t.ToastBytes
			tot.IndexBytes += t.IndexBytes
		}
		tot.Inserts += t.Inserts
		tot.Updates += t.Updates
		tot.Deletes += t.Deletes
		tot.Indexes += t.Indexes
		tot.IndexScans += t.IndexScans
		tot.UnusedIndexes += len(t.UnusedIndexes)
	}
	return r
}

// sampleTable picks the largest readable plain table big enough to give a meaningful rate.
func sampleTable(tables []Table, superuser bool) (Table, bool) {
	for _, t := range tables { // largest first
		if t.Kind == "table" && (t.CanSelect || superuser) && t.RowsEstimate > 0 && t.HeapBytes+t.ToastBytes >= minSampleBytes {
			return t, true
		}
	}
	return Table{}, false
}

// measureRead times a COPY of up to limit on-disk bytes of t to the client and returns the
// rate in on-disk bytes per second (so it compares with table sizes) and the bytes covered.
// The rows read are discarded; the server sees one ordinary sequential read.
func measureRead(ctx context.Context, conn *pgx.Conn, t Table, limit int64) (float64, int64, error) {
	avg := avgRow(t)
	if avg <= 0 {
		return 0, 0, errors.New("no row size estimate")
	}
	rowsWanted := max(limit/avg, 1)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	sql := fmt.Sprintf("COPY (SELECT * FROM %s LIMIT %d) TO STDOUT", pgtypes.TableID{Schema: t.Schema, Name: t.Name}.Sanitize(), rowsWanted)
	start := time.Now()
	tag, err := conn.PgConn().CopyTo(ctx, io.Discard, sql)
	elapsed := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("sample read of %s: %w", t.ID(), err)
	}
	read := tag.RowsAffected() * avg
	if elapsed <= 0 || read < minSampleBytes {
		return 0, 0, fmt.Errorf("sample read of %s: too little data (%d bytes) for a rate", t.ID(), read)
	}
	return float64(read) / elapsed.Seconds(), read, nil
}
