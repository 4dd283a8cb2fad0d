package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pgshift/pgshift/internal/compare"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/report"
	"github.com/pgshift/pgshift/internal/sampledb"
	"github.com/pgshift/pgshift/internal/verify"
)

// demoAgent is the migration agent the demo runs in the background while the workload writes.
type demoAgent struct {
	cancel context.CancelFunc
	done   chan error
}

// stop ends the agent and returns its error; a clean stop (cancellation) is nil.
func (a *demoAgent) stop() error {
	if a == nil {
		return nil
	}
	a.cancel()
	err := <-a.done
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (d *Demo) config() config.Config {
	cfg := config.Defaults()
	cfg.Source, cfg.Target = d.SourceDSN, d.TargetDSN
	return cfg
}

// followDemo starts the agent (copy is already done, so it follows at once), runs the sample
// workload on the source for FollowFor while printing the lag, then waits until the target has
// applied everything the source committed.
func followDemo(ctx context.Context, d *Demo) error {
	cfg := d.proxyConfig()
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.agent = &demoAgent{cancel: cancel, done: make(chan error, 1)}
	go func() {
		d.agent.done <- Run(actx, cfg, RunOptions{HeartbeatInterval: time.Second, MonitorInterval: time.Second}, d.Opts.Logger)
	}()

	// The application connects to the proxy, which sends everything to the source for now.
	if err := d.waitProxy(ctx); err != nil {
		return err
	}
	pool, err := d.connectApp(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	wctx, wcancel := context.WithTimeout(ctx, d.Opts.FollowFor)
	defer wcancel()
	type result struct {
		counts sampledb.Counts
		err    error
	}
	wdone := make(chan result, 1)
	go func() {
		c, err := sampledb.Workload{Pool: pool, Rate: d.Opts.Rate, Workers: 2, Seed: 2}.Run(wctx)
		wdone <- result{c, err}
	}()
	fmt.Fprintf(d.Opts.Out, "    the agent follows the slot while the workload writes to the source through the proxy for %s\n", d.Opts.FollowFor)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	began := time.Now()
	var res result
loop:
	for {
		select {
		case res = <-wdone:
			break loop
		case err := <-d.agent.done:
			d.agent.done <- err // keep it for stop()
			return fmt.Errorf("the agent stopped while following: %w", err)
		case <-tick.C:
			st, err := ReadStatus(ctx, cfg, d.Opts.Logger)
			if err != nil {
				fmt.Fprintf(d.Opts.Out, "    %5.1fs  status unavailable: %v\n", time.Since(began).Seconds(), err)
				continue
			}
			fmt.Fprintf(d.Opts.Out, "    %5.1fs  phase %s, applied %s, lag %s / %.2f s\n",
				time.Since(began).Seconds(), st.Phase, st.AppliedLSN, bytesHuman(st.LagBytes), st.LagSeconds)
		}
	}
	if res.err != nil && !errors.Is(res.err, context.DeadlineExceeded) {
		return fmt.Errorf("demo workload: %w", res.err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	fmt.Fprintf(d.Opts.Out, "    workload on the source: %s\n", res.counts)
	w, err := Wait(ctx, cfg, time.Minute, d.Opts.Logger)
	if err != nil {
		return fmt.Errorf("wait for the target to catch up: %w", err)
	}
	fmt.Fprintf(d.Opts.Out, "    target caught up: applied %s ≥ source %s (waited %s)\n",
		w.AppliedLSN, w.SourceLSN, w.Waited.Round(time.Millisecond))
	return nil
}

// verifyDemo compares source and target with checksums while the agent still follows; any
// difference fails the demo.
func verifyDemo(ctx context.Context, d *Demo) error {
	rep, err := Verify(ctx, d.config(), VerifyOptions{Mode: verify.ModeChecksum, Live: "auto"}, d.Opts.Logger)
	if err != nil {
		return err
	}
	if err := rep.WriteText(newIndent(d.Opts.Out), 5); err != nil {
		return err
	}
	if code := rep.ExitCode(); code != 0 {
		return fmt.Errorf("verify found differences (exit code %d)", code)
	}
	return nil
}

// demoQueries are the case study's kind of performance checks, on the sample database.
const demoQueries = `-- name: order by id
SELECT id, status, total FROM orders WHERE id = 4242;
-- name: a customer's recent orders
SELECT o.id, o.ordered_at, o.total FROM orders o JOIN customers c ON c.id = o.customer_id
WHERE c.id = 77 ORDER BY o.ordered_at DESC LIMIT 20;
-- name: revenue by country
SELECT c.country, count(*), sum(o.total) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.country;
-- name: stock per warehouse
SELECT warehouse_id, sum(quantity) FROM inventory_transactions GROUP BY warehouse_id;
`

// compareDemo times the sample queries on both sides, as pgshift compare-queries does.
func compareDemo(ctx context.Context, d *Demo) error {
	f, err := os.CreateTemp("", "pgshift-demo-queries-*.sql")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(demoQueries); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	rep, err := CompareQueries(ctx, d.config(), CompareOptions{QueriesFile: f.Name(), Format: compare.FormatText,
		Options: compare.Options{Runs: 5, WarmUp: 1, Explain: true}}, newIndent(d.Opts.Out), d.Opts.Logger)
	if err != nil {
		return err
	}
	if n := rep.Failed(); n > 0 {
		return fmt.Errorf("%d of the sample queries could not be compared", n)
	}
	return nil
}

// stopAgentDemo stops the agent cleanly, as SIGTERM does for `pgshift run`.
func stopAgentDemo(ctx context.Context, d *Demo) error {
	err := d.agent.stop()
	d.agent = nil
	if err != nil {
		return fmt.Errorf("the agent: %w", err)
	}
	fmt.Fprintln(d.Opts.Out, "    stopped cleanly; `pgshift run` would resume from the target's stored position")
	return nil
}

// reportDemo writes the migration report: its validation summary to the output, the whole
// report as one HTML file.
func reportDemo(ctx context.Context, d *Demo) error {
	rep, err := Report(ctx, d.config(), time.Now())
	if err != nil {
		return err
	}
	for _, l := range rep.SummaryTree() {
		fmt.Fprintf(d.Opts.Out, "    %s\n", l)
	}
	file := d.Opts.ReportFile
	if file == "" {
		file = filepath.Join(os.TempDir(), fmt.Sprintf("pgshift-demo-report-%s.html", time.Now().Format("20060102-150405")))
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("migration report: %w", err)
	}
	if err := rep.Write(f, report.HTML); err != nil {
		f.Close()
		return fmt.Errorf("migration report %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("migration report %s: %w", file, err)
	}
	d.reportFile = file
	fmt.Fprintf(d.Opts.Out, "    report: %s (pgshift report --format markdown|html|json writes it again)\n", file)
	return nil
}
