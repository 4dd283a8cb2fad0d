package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/sampledb"
)

// DemoDatabase is the sample database's name on both clusters.
const DemoDatabase = "supply_chain"

// DemoOptions shape `pgshift demo`.
type DemoOptions struct {
	Scale float64
	// Keep leaves the clusters running after the steps, prints their DSNs, and waits for
	// Ctrl-C/SIGTERM before removing them.
	Keep bool
	// Warmup is how long the sample workload runs before the assessment, so activity and
	// index use show in the report; 0 skips it.
	Warmup time.Duration
	// Rate is the workload's transactions per second during warm-up and follow (0: as fast as possible).
	Rate float64
	// FollowFor is how long the workload writes to the source while the agent follows it.
	FollowFor time.Duration
	Format    assess.Format
	// BinDir holds the PostgreSQL server binaries; empty means search PATH and /usr/lib/postgresql.
	BinDir string
	// HTTP is the address of the agent's dashboard and API during the demo (default a free
	// local port; printed at the start).
	HTTP string
	// ReportFile receives the HTML migration report at the end (default a file in the
	// system's temporary directory; the path is printed).
	ReportFile string
	Out        io.Writer
	Logger     *slog.Logger
}

// DemoScale reads --scale: a positive number (1 is about 60 MB, 50k orders) or a name: small
// (a few MB, the test's and a quick look's size), medium (1) or large (10).
func DemoScale(s string) (float64, error) {
	switch s {
	case "small":
		return 0.02, nil
	case "medium":
		return 1, nil
	case "large":
		return 10, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f > 0) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("--scale %q: want small, medium, large or a positive number (1 is about 60 MB)", s)
	}
	return f, nil
}

// Demo is what the steps share: the clusters, their DSNs, and what earlier steps produced.
// Later phases add their steps (copy, follow, verify, ...) to DemoSteps and read what they
// need from here.
type Demo struct {
	Opts                 DemoOptions
	Source, Target       *pgtest.Cluster
	SourceDSN, TargetDSN string
	Sizes                sampledb.Sizes
	Workload             sampledb.Counts
	Report               assess.Report

	agent *demoAgent // the background `run` agent between the follow and stop steps

	// The agent's proxy (its address and auth file, in the demo's own directory dir) and what
	// the cutover steps measured.
	proxyAddr, authFile, dir string
	load                     *demoLoad // the application writing through the proxy
	pauses                   []float64 // write pause of each switch, seconds
	clientTxs                int64     // transactions the application committed through the switches
	lossless                 bool      // both sides equal after the last switch
	routedSessions           int       // reader sessions the rollout rule sent to the target
	reportFile               string    // where the report step wrote the migration report
}

// DemoStep is one named stage of the demo.
type DemoStep struct {
	Name string
	Run  func(ctx context.Context, d *Demo) error
}

// DemoSteps is the demo, in order.
func DemoSteps() []DemoStep {
	return []DemoStep{
		{"start source and target clusters", startClusters},
		{"create the sample supply-chain database", createSample},
		{"run the sample workload", warmup},
		{"assess the source and target", assessDemo},
		CopyDemoStep(),
		{"follow the source's changes while the application writes through the proxy", followDemo},
		{"verify source and target while the agent follows", verifyDemo},
		{fmt.Sprintf("send %d %% of read sessions to the target", demoReadShare), readRolloutDemo},
		{"compare query performance on both sides", compareDemo},
		{"cut over to the target under load", cutoverDemo},
		{"roll back to the source under load", rollbackDemo},
		{"cut over again", cutoverAgainDemo},
		{"stop the application and check that nothing was lost", settleDemo},
		{"stop the agent", stopAgentDemo},
		{"write the migration report", reportDemo},
		{"finish the migration", finishDemo},
	}
}

// RunDemo runs the steps on throwaway local clusters and always removes them before it
// returns (with Keep, only after ctx is cancelled). A cancelled ctx (Ctrl-C) stops the
// current step; the error then wraps context.Canceled.
func RunDemo(ctx context.Context, opts DemoOptions, steps []DemoStep) error {
	if opts.Scale <= 0 {
		return fmt.Errorf("--scale must be positive, got %v", opts.Scale)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	d := &Demo{Opts: opts}
	defer d.stop()
	began := time.Now()
	for i, s := range steps {
		fmt.Fprintf(opts.Out, "\n==> [%d/%d] %s\n", i+1, len(steps), s.Name)
		start := time.Now()
		if err := s.Run(ctx, d); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("demo interrupted during %q: %w", s.Name, ctx.Err())
			}
			return fmt.Errorf("demo step %q: %w", s.Name, err)
		}
		fmt.Fprintf(opts.Out, "    done in %s\n", time.Since(start).Round(10*time.Millisecond))
	}
	fmt.Fprintf(opts.Out, "\ndemo finished in %s\n", time.Since(began).Round(100*time.Millisecond))
	if opts.Keep && d.Source != nil {
		// The demo clusters use trust authentication: these DSNs carry no password.
		fmt.Fprintf(opts.Out, "\nThe clusters keep running until you press Ctrl-C:\n  source: %s\n  target: %s\n", d.SourceDSN, d.TargetDSN)
		fmt.Fprintf(opts.Out, "  e.g.  pgshift assess --source '%s' --target '%s'\n", d.SourceDSN, d.TargetDSN)
		<-ctx.Done()
		return nil
	}
	return nil
}

// stop removes both clusters; pgtest.Stop uses its own timeout, so it works after ctx is cancelled.
func (d *Demo) stop() {
	// The application and the agent go first: they hold connections to both clusters.
	if _, err := d.stopLoad(); err != nil && !errors.Is(err, context.Canceled) {
		d.Opts.Logger.Warn("demo: stopping the workload", "err", err)
	}
	if err := d.agent.stop(); err != nil {
		d.Opts.Logger.Warn("demo: stopping the agent", "err", err)
	}
	for _, c := range []*pgtest.Cluster{d.Source, d.Target} {
		if c != nil {
			if err := c.Stop(); err != nil {
				d.Opts.Logger.Warn("demo: removing cluster", "dir", c.Dir, "err", err)
			}
		}
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
}

func startClusters(ctx context.Context, d *Demo) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		d.Source, err = pgtest.Start(gctx, pgtest.Options{BinDir: d.Opts.BinDir, Name: "demo-source"})
		return err
	})
	g.Go(func() (err error) {
		d.Target, err = pgtest.Start(gctx, pgtest.Options{BinDir: d.Opts.BinDir, Name: "demo-target"})
		return err
	})
	if err := g.Wait(); err != nil {
		return err
	}
	var err error
	if d.SourceDSN, err = d.Source.CreateDB(ctx, DemoDatabase); err != nil {
		return err
	}
	if d.TargetDSN, err = d.Target.CreateDB(ctx, DemoDatabase); err != nil {
		return err
	}
	fmt.Fprintf(d.Opts.Out, "    source: PostgreSQL on 127.0.0.1:%d, target: 127.0.0.1:%d (throwaway, removed at exit)\n", d.Source.Port, d.Target.Port)
	if err := demoEndpoints(d); err != nil {
		return err
	}
	fmt.Fprintf(d.Opts.Out, "    dashboard: http://%s/ (from the follow step on); the application's proxy: %s\n", d.Opts.HTTP, d.proxyAddr)
	return nil
}

func createSample(ctx context.Context, d *Demo) error {
	conn, err := pgx.Connect(ctx, d.SourceDSN)
	if err != nil {
		return fmt.Errorf("connect to demo source: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if d.Sizes, err = sampledb.Create(ctx, conn, d.Opts.Scale); err != nil {
		return err
	}
	sz := d.Sizes
	fmt.Fprintf(d.Opts.Out, "    scale %g: %d customers, %d products, %d warehouses, %d orders with %d items, %d inventory movements, %d shipments\n",
		d.Opts.Scale, sz.Customers, sz.Products, sz.Warehouses, sz.Orders, sz.Orders*sz.ItemsPerOrder, sz.Inventory, sz.Shipments)
	return nil
}

func warmup(ctx context.Context, d *Demo) error {
	if d.Opts.Warmup <= 0 {
		fmt.Fprintln(d.Opts.Out, "    skipped")
		return nil
	}
	pool, err := pgxpool.New(ctx, d.SourceDSN)
	if err != nil {
		return fmt.Errorf("connect to demo source: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, d.Opts.Warmup)
	d.Workload, err = sampledb.Workload{Pool: pool, Rate: d.Opts.Rate, Workers: 2, Seed: 1}.Run(wctx)
	cancel()
	// Closing the pool ends the backends, which flushes their statistics for the assessment.
	pool.Close()
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fmt.Fprintf(d.Opts.Out, "    %s in %s\n", d.Workload, d.Opts.Warmup)
	return waitForStats(ctx, d.SourceDSN, d.Workload.Inserts)
}

// waitForStats waits (briefly) until the cumulative statistics show the workload's inserts:
// exiting backends flush them asynchronously.
func waitForStats(ctx context.Context, dsn string, inserts int64) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to demo source: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int64
		// Each statement is its own transaction, so it reads fresh statistics, not a cached snapshot.
		if err := conn.QueryRow(ctx, `SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables`).Scan(&n); err != nil {
			return fmt.Errorf("read statistics: %w", err)
		}
		if n >= inserts || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func assessDemo(ctx context.Context, d *Demo) error {
	cfg := config.Defaults()
	cfg.Source, cfg.Target = d.SourceDSN, d.TargetDSN
	fmt.Fprintln(d.Opts.Out)
	rep, err := Assess(ctx, cfg, AssessOptions{Format: d.Opts.Format, SampleBytes: assess.DefaultSampleBytes}, d.Opts.Out, d.Opts.Logger)
	if err != nil {
		return err
	}
	d.Report = rep
	if !rep.Ready {
		// The sample database is built to be migratable; a blocker here is a defect, not a finding.
		return errors.New("the sample database should be ready to migrate, but the assessment found blockers")
	}
	return nil
}
