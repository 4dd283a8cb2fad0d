package cutover

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// runHooks runs each command with sh -c, in order, bounded by timeout each; the first that
// fails ends it with an error naming the command and the tail of its output.
func runHooks(ctx context.Context, hooks []string, timeout time.Duration, op, live string) (string, error) {
	for i, h := range hooks {
		hctx, cancel := context.WithTimeout(ctx, timeout)
		cmd := exec.CommandContext(hctx, "sh", "-c", h)
		cmd.Env = append(os.Environ(), "PGSHIFT_OP="+op, "PGSHIFT_LIVE="+live)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			if hctx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("timed out after %s (cutover.hook_timeout)", timeout)
			}
			return "", fmt.Errorf("hook %d (%s) failed: %v; output: %s", i+1, h, err, tail(string(out), 400))
		}
	}
	return fmt.Sprintf("%d hooks ran", len(hooks)), nil
}

// smokeChecks runs the SQL smoke checks on conn (the side traffic is on, or moves to) and the
// HTTP checks.
func smokeChecks(ctx context.Context, target *pgx.Conn, sqls, urls []string) (string, error) {
	for _, q := range sqls {
		rows, err := target.Query(ctx, q)
		if err == nil {
			for rows.Next() {
			}
			rows.Close()
			err = rows.Err()
		}
		if err != nil {
			return "", fmt.Errorf("smoke check %q failed: %w", q, err)
		}
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return "", fmt.Errorf("health check %s: %w", u, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", fmt.Errorf("health check %s: %w", u, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 400))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return "", fmt.Errorf("health check %s answered %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
		}
	}
	return fmt.Sprintf("%d SQL and %d HTTP checks passed", len(sqls), len(urls)), nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
