package schema

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// Preamble returns the statements of the script's header-less first item: the session
// settings pg_dump relies on (an empty search_path, standard_conforming_strings, ...). Every
// session that runs items of the script runs them first.
func (s Script) Preamble() []string {
	if len(s.Items) > 0 && s.Items[0].Type == "" {
		return s.Items[0].Statements
	}
	return nil
}

// Objects returns the script's items except the preamble.
func (s Script) Objects() []Item {
	if len(s.Items) > 0 && s.Items[0].Type == "" {
		return s.Items[1:]
	}
	return s.Items
}

// ApplyPreData runs the pre-data script on the target in ONE transaction, then calls inTx in
// that same transaction (to record the phase change): a pre-data step interrupted at any point
// leaves nothing behind, so running it again is always safe. The session's settings are reset
// (RESET ALL) afterwards.
func ApplyPreData(ctx context.Context, conn *pgx.Conn, s Script, inTx func(pgx.Tx) error) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("apply pre-data schema: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if err := execAll(ctx, tx, s.Preamble(), "session setup"); err != nil {
		return err
	}
	for _, it := range s.Objects() {
		if err := execAll(ctx, tx, it.Statements, it.Describe()); err != nil {
			return err
		}
	}
	if inTx != nil {
		if err := inTx(tx); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("apply pre-data schema: commit: %w", err)
	}
	// The script's preamble changed session settings (an empty search_path among them); they
	// outlive the transaction, so put the session back as the caller had it.
	if _, err := conn.Exec(ctx, "RESET ALL"); err != nil {
		return fmt.Errorf("apply pre-data schema: reset session: %w", err)
	}
	return nil
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// execAll runs statements one by one (no arguments: simple protocol, exactly as psql sends
// them), so a failure names the object and the statement.
func execAll(ctx context.Context, q execer, stmts []string, what string) error {
	for _, st := range stmts {
		if _, err := q.Exec(ctx, st); err != nil {
			return &StatementError{Object: what, Statement: st, Err: err}
		}
	}
	return nil
}

// StatementError is a schema statement the target rejected.
type StatementError struct {
	Object    string
	Statement string
	Err       error
}

func (e *StatementError) Error() string {
	return fmt.Sprintf("apply %s on the target: %v\n  statement: %s", e.Object, e.Err, truncate(oneLine(RedactPasswords(e.Statement)), 300))
}

func (e *StatementError) Unwrap() error { return e.Err }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Key identifies a post-data item across runs: a hash of its SQL text.
func (it Item) Key() string {
	h := sha256.Sum256([]byte(it.Type + "\x00" + it.SQL()))
	return hex.EncodeToString(h[:12])
}

// PostDataPlan is post-data split into steps that respect dependencies:
//  1. Indexes: indexes and non-foreign-key constraints (primary keys, unique, exclusion,
//     NOT VALID checks). They depend only on their table, so they build in parallel, largest
//     table first so the longest builds start first.
//  2. Attach: ALTER INDEX ... ATTACH PARTITION, which needs both indexes from step 1; in order.
//  3. ForeignKeys: they need the referenced unique index from steps 1-2; in parallel (two
//     foreign keys between the same tables can deadlock; the loser is retried).
//  4. Other: triggers, rules, policies, comments, statistics and the rest, in dump order
//     (pg_dump's order respects their dependencies).
//
// MatViews (REFRESH MATERIALIZED VIEW) are kept apart: they run at the very end, in dump order.
type PostDataPlan struct {
	Preamble    []string
	Indexes     []Item
	Attach      []Item
	ForeignKeys []Item
	Other       []Item
	MatViews    []Item
}

// PlanPostData splits a post-data script. size gives a table's size for ordering index builds
// (nil: keep dump order).
func PlanPostData(s Script, size func(pgtypes.TableID) int64) PostDataPlan {
	p := PostDataPlan{Preamble: s.Preamble()}
	for _, it := range s.Objects() {
		if isTruncateCapture(it) || isDDLCapture(it) {
			continue
		}
		switch it.Type {
		case "INDEX", "CONSTRAINT":
			p.Indexes = append(p.Indexes, it)
		case "INDEX ATTACH":
			p.Attach = append(p.Attach, it)
		case "FK CONSTRAINT":
			p.ForeignKeys = append(p.ForeignKeys, it)
		case "MATERIALIZED VIEW DATA":
			p.MatViews = append(p.MatViews, it)
		default:
			p.Other = append(p.Other, it)
		}
	}
	if size != nil {
		sizes := make(map[string]int64, len(p.Indexes))
		for _, it := range p.Indexes {
			if t, ok := ItemTable(it); ok {
				sizes[it.Key()] = size(t)
			}
		}
		sort.SliceStable(p.Indexes, func(i, j int) bool { return sizes[p.Indexes[i].Key()] > sizes[p.Indexes[j].Key()] })
	}
	return p
}

// isTruncateCapture reports whether the item is pgshift's own TRUNCATE trigger on a source table
// (state.CaptureTruncates): it calls a function in pgshift's schema, which is never migrated,
// and has no place on the target.
func isTruncateCapture(it Item) bool {
	return it.Type == "TRIGGER" && strings.HasSuffix(it.Name, " "+catalog.TruncateTrigger) &&
		strings.Contains(it.SQL(), catalog.StateSchema+".capture_truncate()")
}

// isDDLCapture reports whether the item is pgshift's own event trigger on the source
// (state.CaptureDDL), which calls a function in pgshift's schema and has no place on the target.
func isDDLCapture(it Item) bool {
	return it.Type == "EVENT TRIGGER" && it.Name == catalog.DDLTrigger
}

// ItemTable returns the table an INDEX or CONSTRAINT item works on, from its first statement
// ("CREATE [UNIQUE] INDEX name ON [ONLY] s.t ..." or "ALTER TABLE [ONLY] s.t ...").
func ItemTable(it Item) (pgtypes.TableID, bool) {
	if len(it.Statements) == 0 {
		return pgtypes.TableID{}, false
	}
	toks := tokens(it.Statements[0], 8)
	is := func(i int, w string) bool { return i < len(toks) && strings.EqualFold(toks[i], w) }
	var i int
	switch {
	case is(0, "CREATE") && is(1, "INDEX") && is(3, "ON"):
		i = 4
	case is(0, "CREATE") && is(1, "UNIQUE") && is(2, "INDEX") && is(4, "ON"):
		i = 5
	case is(0, "ALTER") && is(1, "TABLE"):
		i = 2
	default:
		return pgtypes.TableID{}, false
	}
	if i < len(toks) && strings.EqualFold(toks[i], "ONLY") {
		i++
	}
	if i >= len(toks) {
		return pgtypes.TableID{}, false
	}
	return parseQualified(toks[i])
}

// tokens splits the start of a statement on white space, keeping double-quoted names whole.
func tokens(s string, max int) []string {
	var out []string
	for len(out) < max {
		s = strings.TrimLeft(s, " \t\r\n")
		if s == "" {
			break
		}
		end, inQuote := 0, false
		for end < len(s) {
			c := s[end]
			if c == '"' {
				inQuote = !inQuote // "" inside a name toggles twice: still inside
			} else if !inQuote && (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '(') {
				break
			}
			end++
		}
		if end == 0 {
			end = 1
		}
		out = append(out, s[:end])
		s = s[end:]
	}
	return out
}

// parseQualified parses schema.name where each part is a plain or double-quoted identifier.
func parseQualified(s string) (pgtypes.TableID, bool) {
	parts, ok := parseNameParts(s)
	if !ok || len(parts) != 2 {
		return pgtypes.TableID{}, false
	}
	return pgtypes.TableID{Schema: parts[0], Name: parts[1]}, true
}

// parseNameParts splits a dotted name whose parts are plain identifiers (folded to lower case,
// as the server does) or double-quoted ones (kept as written, "" unescaped).
func parseNameParts(s string) ([]string, bool) {
	var parts []string
	for len(s) > 0 {
		if s[0] == '"' {
			var b strings.Builder
			i := 1
			for ; i < len(s); i++ {
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						b.WriteByte('"')
						i++
						continue
					}
					break
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, false
			}
			parts = append(parts, b.String())
			s = s[i+1:]
		} else {
			end := strings.IndexByte(s, '.')
			if end < 0 {
				end = len(s)
			}
			if end == 0 {
				return nil, false
			}
			parts = append(parts, strings.ToLower(s[:end]))
			s = s[end:]
		}
		if len(s) > 0 {
			if s[0] != '.' {
				return nil, false
			}
			s = s[1:]
			if s == "" {
				return nil, false
			}
		}
	}
	return parts, len(parts) > 0
}

// PostDataOptions control ApplyPostData.
type PostDataOptions struct {
	Jobs int
	// SessionSettings run at the start of every item's transaction (SET LOCAL ...), e.g. a
	// larger maintenance_work_mem for index builds.
	SessionSettings []string
	// Done reports items already applied by an earlier run; they are skipped.
	Done func(Item) bool
	// Record is called inside each item's transaction, so an item and the record of it commit
	// together and a resumed run neither skips nor repeats one.
	Record func(ctx context.Context, tx pgx.Tx, it Item) error
	// Progress is called after each item commits.
	Progress func(it Item, took time.Duration)
	Log      *slog.Logger
}

// deadlockRetries bounds retries of an item that lost a deadlock (foreign keys between the
// same tables built at once).
const deadlockRetries = 5

// ApplyPostData runs the plan's steps 1-4 on the target through pool (one session per item,
// at most Jobs at a time). Materialized views are not refreshed here: call RunItems on
// plan.MatViews at the end.
func ApplyPostData(ctx context.Context, pool *pgxpool.Pool, p PostDataPlan, opts PostDataOptions) error {
	if opts.Jobs < 1 {
		opts.Jobs = 1
	}
	steps := []struct {
		items    []Item
		parallel bool
	}{{p.Indexes, true}, {p.Attach, false}, {p.ForeignKeys, true}, {p.Other, false}}
	for _, st := range steps {
		jobs := 1
		if st.parallel {
			jobs = opts.Jobs
		}
		if err := RunItems(ctx, pool, p.Preamble, st.items, jobs, opts); err != nil {
			return err
		}
	}
	return nil
}

// RunItems applies items with at most jobs at a time (1: in order), each in its own
// transaction together with opts.Record.
func RunItems(ctx context.Context, pool *pgxpool.Pool, preamble []string, items []Item, jobs int, opts PostDataOptions) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(jobs, 1))
	for _, it := range items {
		if opts.Done != nil && opts.Done(it) {
			continue
		}
		g.Go(func() error {
			start := time.Now()
			var err error
			for attempt := 0; ; attempt++ {
				err = runItem(gctx, pool, preamble, it, opts)
				var pgErr *pgconn.PgError
				if err != nil && errors.As(err, &pgErr) && pgErr.Code == "40P01" && attempt < deadlockRetries {
					if opts.Log != nil {
						opts.Log.Info("post-data step lost a deadlock; retrying", "object", it.Describe(), "attempt", attempt+1)
					}
					continue
				}
				break
			}
			if err != nil {
				return err
			}
			if opts.Progress != nil {
				opts.Progress(it, time.Since(start))
			}
			return nil
		})
	}
	return g.Wait()
}

func runItem(ctx context.Context, pool *pgxpool.Pool, preamble []string, it Item, opts PostDataOptions) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("apply %s: %w", it.Describe(), err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("apply %s: %w", it.Describe(), err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if err := execAll(ctx, tx, preamble, "session setup"); err != nil {
		return err
	}
	if err := execAll(ctx, tx, opts.SessionSettings, "session settings"); err != nil {
		return err
	}
	if err := execAll(ctx, tx, it.Statements, it.Describe()); err != nil {
		return err
	}
	if opts.Record != nil {
		if err := opts.Record(ctx, tx, it); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("apply %s: commit: %w", it.Describe(), err)
	}
	return nil
}
