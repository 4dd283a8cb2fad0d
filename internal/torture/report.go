package torture

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// RegressionSeed is one line of testdata/seeds.txt: a seed that once failed, the generator
// classes it was drawn with (empty: the default, everything on), and the bug.
type RegressionSeed struct {
	Seed    uint64
	Classes string
	DDL     string // "", stop or follow
	Bug     string
}

// ReadSeeds parses a seeds file: "<seed> [classes=<spec>] [ddl=stop|follow] # <bug>" per line,
// where spec is a PGSHIFT_TORTURE_CLASSES value without spaces; blank lines and lines starting
// with # are ignored.
func ReadSeeds(path string) ([]RegressionSeed, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	var out []RegressionSeed
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		spec, bug, _ := strings.Cut(text, "#")
		fields := strings.Fields(spec)
		if len(fields) == 0 || len(fields) > 3 {
			return nil, fmt.Errorf("%s:%d: want \"<seed> [classes=<spec>] [ddl=stop|follow] # <bug>\"", path, line)
		}
		seed, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %q is not a seed", path, line, fields[0])
		}
		r := RegressionSeed{Seed: seed, Bug: strings.TrimSpace(bug)}
		for _, f := range fields[1:] {
			if d, ok := strings.CutPrefix(f, "ddl="); ok {
				if d != "stop" && d != "follow" {
					return nil, fmt.Errorf("%s:%d: %q: want ddl=stop or ddl=follow", path, line, f)
				}
				r.DDL = d
				continue
			}
			c, ok := strings.CutPrefix(f, "classes=")
			if !ok {
				return nil, fmt.Errorf("%s:%d: %q: want classes=<spec> or ddl=stop|follow", path, line, f)
			}
			if _, err := ParseClasses(c); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, line, err)
			}
			r.Classes = c
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// caseSeed derives the i-th random case seed of a run (splitmix64), so a whole run is
// replayed from its base seed.
func caseSeed(base uint64, i int) uint64 {
	z := base + uint64(i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Summary is a whole run's figures.
type Summary struct {
	BaseSeed    uint64         `json:"base_seed"`
	Classes     string         `json:"classes"`
	Elapsed     time.Duration  `json:"elapsed_ns"`
	Cases       int            `json:"cases"`
	Regressions int            `json:"regression_cases"`
	OK          int            `json:"ok"`
	Refused     int            `json:"refused_as_required"`
	Failed      int            `json:"failed"`
	HarnessErr  int            `json:"harness_errors"`
	Txns        int64          `json:"source_transactions"`
	TxnsFailed  int64          `json:"source_transactions_failed"`
	Rows        int64          `json:"rows_written"`
	InitialRows int64          `json:"initial_rows"`
	BigTxns     int64          `json:"big_transactions"`
	Kills       int            `json:"agent_kills"`
	EarlyKills  int            `json:"early_kills"`
	Agents      int            `json:"agent_starts"`
	StartupExit int            `json:"startup_exits"`
	Restarts    int            `json:"server_restarts"`
	DDL         int            `json:"ddl"`
	DDLStops    int            `json:"ddl_stops"`
	StartOvers  int            `json:"slot_start_overs"`
	Barriers    int            `json:"barrier_checks"`
	PeakRSSKiB  int64          `json:"peak_rss_kib"`
	ByClass     map[string]int `json:"failures_by_class"`
	Failures    []Failure      `json:"failures"`
	FailedSeeds []uint64       `json:"failed_seeds"`
	Replay      string         `json:"replay"`
}

func (s *Summary) add(r *CaseResult) {
	s.Cases++
	switch r.Outcome {
	case "ok":
		s.OK++
	case "refused":
		s.Refused++
	case "harness-error":
		s.HarnessErr++
	default:
		s.Failed++
	}
	s.Txns += r.Txns
	s.TxnsFailed += r.TxnsFailed
	s.Rows += r.Rows
	s.InitialRows += r.InitialRows
	s.BigTxns += r.BigTxns
	s.Kills += r.Kills
	s.EarlyKills += r.EarlyKills
	s.Agents += r.Agents
	s.StartupExit += r.StartupExits
	s.Restarts += r.Restarts
	s.DDL += r.DDL
	s.DDLStops += r.DDLStops
	s.StartOvers += r.SlotStartOvers
	s.Barriers += r.Barriers
	s.PeakRSSKiB = max(s.PeakRSSKiB, r.PeakRSSKiB)
	if s.ByClass == nil {
		s.ByClass = map[string]int{}
	}
	seen := map[string]bool{}
	for _, f := range r.Failures {
		if !seen[f.Class] {
			s.ByClass[f.Class]++
			seen[f.Class] = true
		}
		s.Failures = append(s.Failures, f)
	}
	if len(r.Failures) > 0 {
		s.FailedSeeds = append(s.FailedSeeds, r.Seed)
	}
}

// Write prints the summary for people.
func (s *Summary) Write(w io.Writer) {
	fmt.Fprintf(w, "==== pgshift torture summary ====\n")
	fmt.Fprintf(w, "base seed %d, classes %s, elapsed %s\n", s.BaseSeed, s.Classes, s.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "cases: %d (%d regression seeds): %d ok, %d refused as required, %d failed, %d harness errors\n",
		s.Cases, s.Regressions, s.OK, s.Refused, s.Failed, s.HarnessErr)
	fmt.Fprintf(w, "source transactions: %d (%d rolled back or failed on the source), rows written: %d, initial rows: %d, big transactions: %d\n",
		s.Txns, s.TxnsFailed, s.Rows, s.InitialRows, s.BigTxns)
	fmt.Fprintf(w, "agent kills: %d (%d during the copy), agent starts: %d (%d after giving up at startup during a server restart), server restarts: %d, DDL: %d (%d loud stops), barrier checks: %d, peak agent RSS: %d MiB\n",
		s.Kills, s.EarlyKills, s.Agents, s.StartupExit, s.Restarts, s.DDL, s.DDLStops, s.Barriers, s.PeakRSSKiB>>10)
	if s.StartOvers > 0 {
		fmt.Fprintf(w, "slots the source could not decode (PostgreSQL's snapshot-builder defect; pgshift stopped naming it and the harness took its remedy, copy --force): %d\n", s.StartOvers)
	}
	if len(s.ByClass) == 0 {
		fmt.Fprintf(w, "failures: none\n")
		return
	}
	fmt.Fprintf(w, "failures by class (cases):\n")
	classes := sortedKeys(s.ByClass)
	sort.SliceStable(classes, func(i, j int) bool { return s.ByClass[classes[i]] > s.ByClass[classes[j]] })
	for _, c := range classes {
		var seeds []string
		seen := map[uint64]bool{}
		for _, f := range s.Failures {
			if f.Class == c && !seen[f.Seed] {
				seen[f.Seed] = true
				seeds = append(seeds, strconv.FormatUint(f.Seed, 10))
			}
		}
		if len(seeds) > 12 {
			seeds = append(seeds[:12], "…")
		}
		fmt.Fprintf(w, "  %-22s %4d  seeds %s\n", c, s.ByClass[c], strings.Join(seeds, " "))
	}
	fmt.Fprintf(w, "replay one: %s\n", s.Replay)
}

// WriteJSON saves the summary for scripts.
func (s *Summary) WriteJSON(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
