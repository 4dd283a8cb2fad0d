// Package plan designs the target before a byte moves: storage with its headroom, IOPS from
// the source's measured write rate, and the settings the target should start with, each with
// a one-line reason. gather.go reads the servers into Facts (reusing assess's facts), rules.go
// turns Facts into a Plan with no I/O, format.go renders it as text, JSON, Markdown, ALTER
// SYSTEM statements, a Terraform aws_db_parameter_group block or the JSON that
// `aws rds modify-db-parameter-group --parameters` takes.
//
// The rules for the copy's WAL (CopyWAL, LoadMaxWALSize, CheckpointEvery) are also what the
// copy uses to warn about a target whose max_wal_size makes it checkpoint every few seconds.
package plan

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
)

// Resources are the target's memory and cores, as the user states them (--target-memory,
// --target-cpus). Zero means unknown: the settings that depend on them are then not planned,
// and the plan says so, rather than guessed.
type Resources struct {
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	CPUs        int   `json:"cpus,omitempty"`
}

// Options tune a plan.
type Options struct {
	Filter    config.TableFilter
	Jobs      int
	Resources Resources
	// SampleBytes caps assess's timed read of the largest table, which the copy-time estimate
	// (and so the copy's WAL rate) rests on; 0 uses assess's stated default rates.
	SampleBytes            int64
	SourceName, TargetName string
	Logger                 *slog.Logger
	Now                    func() time.Time
}

// Run reads the source (and the target when dst is not nil) and plans the target. It only
// reads. An error means the plan could not be made.
func Run(ctx context.Context, src, dst *pgx.Conn, opts Options) (Plan, error) {
	f, err := Gather(ctx, src, dst, opts)
	if err != nil {
		return Plan{}, err
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	p := Build(f)
	p.GeneratedAt = now().UTC()
	return p, nil
}

// ParseMemory reads a size as PostgreSQL spells one, in powers of 1024: "16GB", "512MB",
// "16GiB", "1TB", or a plain number of bytes.
func ParseMemory(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"tib", 1 << 40}, {"tb", 1 << 40}, {"gib", 1 << 30}, {"gb", 1 << 30}, {"mib", 1 << 20}, {"mb", 1 << 20},
		{"kib", 1 << 10}, {"kb", 1 << 10}, {"b", 1}}
	lower := strings.ToLower(t)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(lower, u.suffix) {
			mult, t = u.mult, strings.TrimSpace(t[:len(t)-len(u.suffix)])
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with a unit such as 16GB or 512MB", s)
	}
	return int64(v * float64(mult)), nil
}
