package plan

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgshift/pgshift/internal/assess"
)

// Facts is everything the rules need, as read from the servers (Gather) or written by a test.
type Facts struct {
	Source assess.Server
	// Target is nil when no target was given; the plan then says what to set, not what to change.
	Target    *assess.Server
	Resources Resources
	// DataBytes and IndexBytes are the heap + TOAST and the indexes of the tables the copy moves.
	DataBytes, IndexBytes int64
	// CopySeconds is the fast end of assess's copy-time estimate: the copy writes its WAL at
	// most this fast, which is what sizes max_wal_size for the load.
	CopySeconds float64
	// CopySecondsSlow is the slow end of the same estimate.
	CopySecondsSlow float64
	// LargestIndex is the source's largest index among the copied tables.
	LargestIndex Index
	// Writes are the source's cumulative write and read counters.
	Writes WriteStats
	// MaxConnections is the source's max_connections; Connections its client sessions now.
	MaxConnections, Connections int
	// MaxLogicalWorkers is the source's max_logical_replication_workers.
	MaxLogicalWorkers int
	// PreloadLibraries is the source's shared_preload_libraries, in order.
	PreloadLibraries []string
	// TargetSettings are the target's current values of the planned settings, by name; nil
	// without a target.
	TargetSettings map[string]Current
	// TargetHasContrib: the target offers pg_stat_statements, so PostgreSQL's contrib modules
	// (auto_explain among them) are installed there. Meaningful only with a target.
	TargetHasContrib bool
}

// Index is one index and its size.
type Index struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
}

// WriteStats are the source's cumulative I/O counters and how long they have been counting.
type WriteStats struct {
	// From names the view Bytes comes from: "pg_stat_wal" (WAL bytes, PostgreSQL 14+) or
	// "pg_stat_bgwriter" (data pages written by checkpoints, the background writer and
	// backends, times the block size, before 14).
	From    string  `json:"from"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// ReadBytes are blocks read from outside shared buffers (pg_stat_database.blks_read)
	// times the block size, over ReadSeconds.
	ReadBytes   int64   `json:"read_bytes"`
	ReadSeconds float64 `json:"read_seconds"`
}

// Current is one target setting as pg_settings shows it.
type Current struct {
	Setting string
	Unit    string
}

// Setting is one recommended server setting with the reason for it.
type Setting struct {
	Name string `json:"name"`
	// Value is as postgresql.conf and ALTER SYSTEM spell it ("1GB", "900s", "logical");
	// a list setting's items are in List and Value joins them with commas.
	Value string   `json:"value"`
	List  []string `json:"list,omitempty"`
	// RDSName and RDSValue are the parameter as an RDS parameter group names it and its value
	// there, in the parameter's base unit (8 kB pages for shared_buffers, kB for work_mem...).
	RDSName  string `json:"rds_name"`
	RDSValue string `json:"rds_value"`
	// Restart: the setting takes effect only when the server restarts.
	Restart bool `json:"restart"`
	// AtLeast: a larger value on the target is as good (slots, senders, wal_level).
	AtLeast bool   `json:"at_least,omitempty"`
	Reason  string `json:"reason"`
	// Current is the target's value as pg_settings shows it, when a target was read.
	Current string `json:"current,omitempty"`
	// Change says the target needs this setting changed; true for every setting when no
	// target was read.
	Change bool `json:"change"`

	// num is the value in the unit compare works in (bytes, seconds, a count, an enum rank).
	num  float64
	kind kind
}

type kind int

const (
	kindBytes kind = iota
	kindSeconds
	kindNumber
	kindWalLevel
	kindList
)

// Plan is the target's design. Its JSON form is stable: fields are only ever added.
type Plan struct {
	GeneratedAt time.Time `json:"generated_at"`
	Source      Summary   `json:"source"`
	Target      *Summary  `json:"target,omitempty"`
	Resources   Resources `json:"resources"`
	// Family is the RDS parameter group family for the target's major version ("postgres15").
	Family        string `json:"family"`
	StorageBytes  int64  `json:"storage_bytes"`
	StorageReason string `json:"storage_reason"`
	IOPS          int    `json:"iops"`
	IOPSReason    string `json:"iops_reason"`
	CopyWALBytes  int64  `json:"copy_wal_bytes"`
	// CopyWriteRate is how fast the copy writes data, indexes and WAL at the estimate's fast
	// end; CopyWriteRateSlow at its slow end.
	CopyWriteRate     float64 `json:"copy_write_bytes_per_sec"`
	CopyWriteRateSlow float64 `json:"copy_write_bytes_per_sec_slow,omitempty"`
	// Settings are the recommendations, in the order a reader thinks about them.
	Settings []Setting `json:"settings"`
	// Notes say what the plan could not decide and why.
	Notes []string `json:"notes,omitempty"`
}

// Summary names a side the plan rests on.
type Summary struct {
	Endpoint string `json:"endpoint"`
	Version  string `json:"version"`
}

// Changes returns the settings the target needs changed.
func (p Plan) Changes() []Setting {
	var out []Setting
	for _, s := range p.Settings {
		if s.Change {
			out = append(out, s)
		}
	}
	return out
}

// Sizes and rates the rules rest on.
const (
	// WALPerCopiedByte is the WAL the target writes per byte of table data and index the copy
	// loads: COPY logs every row (at wal_level replica or logical), and an index build logs
	// every page of the index. Measured on pgbench scale 100 (bench/plan.sh): 1214MB of WAL
	// for 1495MB of data and indexes, 0.81, as multi-row insert records leave out most of each
	// narrow row's header; wide and TOASTed rows log about their size, so 1.0 is used.
	WALPerCopiedByte = 1.0
	// LoadCheckpointTimeout is the checkpoint_timeout the plan sets: at most one timed
	// checkpoint every 15 minutes.
	LoadCheckpointTimeout = 15 * time.Minute
	// CheckpointCompletionTarget is the value the plan sets (the default from 14; 0.5 before).
	CheckpointCompletionTarget = 0.9
	// CheckpointWarning is PostgreSQL's default checkpoint_warning: WAL-triggered
	// checkpoints closer than this log "checkpoints are occurring too frequently".
	CheckpointWarning = 30 * time.Second
	// minStatsAge is how long counters must have been counting for an average to mean much.
	minStatsAge = 600 // seconds
	// gp3BaselineIOPS is what an RDS gp3 volume gives without paying for more.
	gp3BaselineIOPS = 3000
	minStorage      = 20 << 30 // RDS's smallest PostgreSQL volume
	pageBytes       = 8192
)

// CopyWAL is the WAL a copy of this much table data and index writes on the target.
func CopyWAL(dataBytes, indexBytes int64) int64 {
	return int64(WALPerCopiedByte * float64(dataBytes+indexBytes))
}

// CheckpointEvery is how often a server with this max_wal_size and
// checkpoint_completion_target checkpoints when WAL arrives at walPerSec: PostgreSQL starts a
// checkpoint each time max_wal_size / (1 + checkpoint_completion_target) of WAL has been
// written since the last one. 0 when walPerSec is not positive.
func CheckpointEvery(maxWALBytes int64, completionTarget, walPerSec float64) time.Duration {
	if walPerSec <= 0 {
		return 0
	}
	return time.Duration(float64(maxWALBytes) / (1 + completionTarget) / walPerSec * float64(time.Second))
}

// LoadMaxWALSize is the max_wal_size under which a copy writing copyWAL bytes in copySeconds
// checkpoints only on checkpoint_timeout (timeout): timeout's worth of the copy's WAL times
// (1 + completion target), but never more than lets the whole copy run without a
// WAL-triggered checkpoint (more buys nothing), nor less than PostgreSQL's default 1 GB;
// rounded up to whole GB.
func LoadMaxWALSize(copyWAL int64, copySeconds float64, timeout time.Duration) int64 {
	want := int64(1 << 30)
	if copyWAL > 0 && copySeconds > 0 {
		rate := float64(copyWAL) / copySeconds
		need := rate * timeout.Seconds() * (1 + CheckpointCompletionTarget)
		whole := float64(copyWAL) * (1 + CheckpointCompletionTarget)
		want = max(want, int64(math.Min(need, whole)))
	}
	return roundUp(want, 1<<30)
}

// Build turns facts into a plan. It is pure.
func Build(f Facts) Plan {
	p := Plan{Resources: f.Resources}
	p.Source = Summary{Endpoint: f.Source.Endpoint, Version: f.Source.Version}
	major := f.Source.VersionNum / 10000
	if f.Target != nil {
		p.Target = &Summary{Endpoint: f.Target.Endpoint, Version: f.Target.Version}
		major = f.Target.VersionNum / 10000
	}
	p.Family = fmt.Sprintf("postgres%d", major)
	p.CopyWALBytes = CopyWAL(f.DataBytes, f.IndexBytes)
	if f.CopySeconds > 0 {
		p.CopyWriteRate = float64(f.DataBytes+f.IndexBytes+p.CopyWALBytes) / f.CopySeconds
	}
	if f.CopySecondsSlow > 0 {
		p.CopyWriteRateSlow = float64(f.DataBytes+f.IndexBytes+p.CopyWALBytes) / f.CopySecondsSlow
	}

	maxWAL, walReason := maxWALSize(f, p.CopyWALBytes)
	p.StorageBytes, p.StorageReason = storage(f, maxWAL)
	p.IOPS, p.IOPSReason = iops(f, p.CopyWriteRateSlow, p.CopyWriteRate)

	add := func(s Setting) { p.Settings = append(p.Settings, s) }
	if mem := f.Resources.MemoryBytes; mem > 0 {
		for _, s := range memorySettings(f, mem) {
			add(s)
		}
	} else {
		p.Notes = append(p.Notes, "shared_buffers, effective_cache_size, work_mem and maintenance_work_mem are not planned: "+
			"the target's memory is unknown (give --target-memory, e.g. --target-memory 16GB)")
	}
	// More WAL between checkpoints, a longer timeout or more index memory on the target is as
	// good for the load: the plan never asks to lower them.
	walSetting := bytesSetting("max_wal_size", maxWAL, 1<<20, false, walReason)
	walSetting.AtLeast = true
	add(walSetting)
	add(Setting{Name: "checkpoint_timeout", Value: fmt.Sprintf("%ds", int(LoadCheckpointTimeout.Seconds())), AtLeast: true,
		RDSValue: strconv.Itoa(int(LoadCheckpointTimeout.Seconds())), num: LoadCheckpointTimeout.Seconds(), kind: kindSeconds,
		Reason: "one timed checkpoint every 15 min instead of 5: fewer full-page images after each checkpoint, during the load and after; crash recovery replays at most about that much WAL"})
	add(Setting{Name: "checkpoint_completion_target", Value: "0.9", RDSValue: "0.9", num: CheckpointCompletionTarget, kind: kindNumber,
		Reason: "spread each checkpoint's writes over 90% of the interval (the default from PostgreSQL 14, 0.5 before)"})
	if f.Resources.CPUs > 0 {
		for _, s := range cpuSettings(f) {
			add(s)
		}
	} else {
		p.Notes = append(p.Notes, "max_worker_processes and the parallel-worker settings are not planned: the target's cores are unknown (give --target-cpus N)")
	}
	for _, s := range replicationSettings(f) {
		add(s)
	}
	if libs, reason, note := preloadLibraries(f); len(libs) > 0 {
		add(Setting{Name: "shared_preload_libraries", Value: strings.Join(libs, ","), List: libs, RDSValue: strings.Join(libs, ","),
			Restart: true, AtLeast: true, kind: kindList, Reason: reason})
		if note != "" {
			p.Notes = append(p.Notes, note)
		}
	} else if note != "" {
		p.Notes = append(p.Notes, note)
	}
	for i := range p.Settings {
		s := &p.Settings[i]
		if s.RDSName == "" {
			s.RDSName = s.Name
		}
		s.Change = true
		if f.TargetSettings != nil {
			cur, ok := f.TargetSettings[s.Name]
			if ok {
				s.Current = cmp.Or(display(cur), "(empty)")
				s.Change = needsChange(*s, cur)
			}
		}
	}
	return p
}

func memorySettings(f Facts, mem int64) []Setting {
	shared := roundDown(mem/4, 1<<20)
	cache := roundDown(mem*3/4, 1<<20)
	conns := max(f.MaxConnections, 1)
	work := roundDown((mem-shared)/int64(conns*3), 1<<20)
	workReason := fmt.Sprintf("(%s memory − %s shared buffers) ÷ (%d connections, the source's max_connections, × 3 sorts or hashes each)",
		human(mem), human(shared), conns)
	if work < 4<<20 {
		work = 4 << 20
		workReason += " is under 4MB, PostgreSQL's default, which is kept"
	}
	capBytes := max(min(mem/16, 2<<30), 64<<20)
	maint := max(roundUp(f.LargestIndex.Bytes, 64<<20), 64<<20)
	maintReason := "no index to build: PostgreSQL's 64MB default"
	if f.LargestIndex.Bytes > 0 {
		maintReason = fmt.Sprintf("the largest index, %s, is %s: a build of it sorts in memory instead of on disk", f.LargestIndex.Name, human(f.LargestIndex.Bytes))
	}
	if maint > capBytes {
		maint = capBytes
		maintReason += fmt.Sprintf("; capped at %s (1/16 of memory, at most 2GB), as each autovacuum worker may use as much", human(capBytes))
	}
	return []Setting{
		bytesSetting("shared_buffers", shared, pageBytes, true,
			fmt.Sprintf("a quarter of the target's %s memory, PostgreSQL's usual start (RDS's default is about the same); the rest is the OS's cache", human(mem))),
		bytesSetting("effective_cache_size", cache, pageBytes, false,
			fmt.Sprintf("shared buffers plus the OS cache the planner may count on: three quarters of %s", human(mem))),
		bytesSetting("work_mem", work, 1<<10, false, workReason),
		atLeast(bytesSetting("maintenance_work_mem", maint, 1<<10, false, maintReason)),
	}
}

// maxWALSize is the larger of what the copy needs (LoadMaxWALSize) and what the source's
// steady WAL rate needs for the same checkpoint interval.
func maxWALSize(f Facts, copyWAL int64) (int64, string) {
	v := LoadMaxWALSize(copyWAL, f.CopySeconds, LoadCheckpointTimeout)
	reason := "PostgreSQL's default 1GB: the copy's duration is unknown"
	switch {
	case copyWAL > 0 && f.CopySeconds > 0 && v == 1<<30:
		reason = fmt.Sprintf("the copy writes about %s of WAL at up to %s/s: with the default 1GB it checkpoints at most every %s, or never for WAL alone if that is longer than the copy; the default is kept",
			human(copyWAL), human(int64(float64(copyWAL)/f.CopySeconds)), roundDur(CheckpointEvery(1<<30, CheckpointCompletionTarget, float64(copyWAL)/f.CopySeconds).Seconds()))
	case copyWAL > 0 && f.CopySeconds > 0:
		rate := float64(copyWAL) / f.CopySeconds
		reason = fmt.Sprintf("the copy writes about %s of WAL at up to %s/s (%s of data and indexes in %s at the estimate's fast end); with %s a checkpoint comes every %s of WAL, so the load checkpoints on the 15 min timer, not every %s as with the default 1GB",
			human(copyWAL), human(int64(rate)), human(f.DataBytes+f.IndexBytes), roundDur(f.CopySeconds), human(v),
			human(int64(float64(v)/(1+CheckpointCompletionTarget))), roundDur(CheckpointEvery(1<<30, CheckpointCompletionTarget, rate).Seconds()))
	}
	if f.Writes.From == "pg_stat_wal" && f.Writes.Seconds >= minStatsAge {
		rate := float64(f.Writes.Bytes) / f.Writes.Seconds
		steady := roundUp(int64(rate*LoadCheckpointTimeout.Seconds()*(1+CheckpointCompletionTarget)), 1<<30)
		if steady > v {
			v = steady
			reason = fmt.Sprintf("the source writes %s/s of WAL on average (pg_stat_wal): 15 min of it × 1.9 so checkpoints come on the timer after cutover too", human(int64(rate)))
		}
	}
	return v, reason
}

func storage(f Facts, maxWAL int64) (int64, string) {
	base := int64(float64(f.Source.DatabaseBytes) * assess.SpaceFactor)
	total := roundUp(base+maxWAL, 1<<30)
	reason := fmt.Sprintf("the source database is %s; × %.1f for the copy, index builds and growth while following (the case study's 50%% buffer) = %s, plus %s of WAL the target may hold (max_wal_size)",
		human(f.Source.DatabaseBytes), assess.SpaceFactor, human(base), human(maxWAL))
	if total < minStorage {
		total = minStorage
		reason += "; raised to 20GB, RDS's smallest volume"
	}
	return total, reason
}

func iops(f Facts, slowRate, fastRate float64) (int, string) {
	w := f.Writes
	copyNote := ""
	if fastRate > 0 {
		rate := "up to " + human(int64(fastRate)) + "/s"
		if slowRate > 0 {
			rate = human(int64(slowRate)) + "/s to " + human(int64(fastRate)) + "/s"
		}
		copyNote = fmt.Sprintf("; the copy itself writes %s (data, indexes and their WAL, the copy-time estimate's range) in large sequential writes: that is throughput (gp3: 125MB/s included, up to 1000MB/s), not IOPS", rate)
	}
	if w.Seconds < minStatsAge || w.From == "" {
		return gp3BaselineIOPS, fmt.Sprintf("the source's write counters have %s of history, too little for a rate: %d, gp3's baseline; plan again when they have a day%s",
			roundDur(w.Seconds), gp3BaselineIOPS, copyNote)
	}
	writeRate := float64(w.Bytes) / w.Seconds
	readRate := 0.0
	if w.ReadSeconds >= minStatsAge {
		readRate = float64(w.ReadBytes) / w.ReadSeconds
	}
	avg := (writeRate + readRate) / pageBytes
	peak := int(math.Ceil(avg * 3))
	v := max(gp3BaselineIOPS, int(roundUp(int64(peak), 100)))
	what := "WAL"
	if w.From == "pg_stat_bgwriter" {
		what = "data pages"
	}
	reason := fmt.Sprintf("the source wrote %s/s of %s (%s, average over %s) and read %s/s from outside shared buffers (pg_stat_database): %.0f I/Os of 8kB per second, × 3 for the peaks an average hides = %d",
		human(int64(writeRate)), what, w.From, roundDur(w.Seconds), human(int64(readRate)), avg, peak)
	if v == gp3BaselineIOPS {
		reason += fmt.Sprintf("; gp3's baseline of %d covers it", gp3BaselineIOPS)
	}
	return v, reason + copyNote
}

func cpuSettings(f Facts) []Setting {
	cpus := f.Resources.CPUs
	logical := max(f.MaxLogicalWorkers, 4)
	half := max(1, min(4, cpus/2))
	workers := max(8, cpus+logical+2)
	return []Setting{
		numberSetting("max_worker_processes", workers, true, true,
			fmt.Sprintf("%d cores for parallel queries + %d logical replication workers + 2 for autoprewarm and the like (at least the default 8)", cpus, logical)),
		numberSetting("max_parallel_workers", cpus, false, false, fmt.Sprintf("one parallel worker per core (%d)", cpus)),
		numberSetting("max_parallel_workers_per_gather", half, false, false, fmt.Sprintf("half the %d cores for one query, at most 4, so one query cannot take them all", cpus)),
		numberSetting("max_parallel_maintenance_workers", half, false, false, fmt.Sprintf("half the %d cores for one index build, at most 4", cpus)),
	}
}

func replicationSettings(f Facts) []Setting {
	src := f.Source
	slots := max(src.MaxSlots, src.UsedSlots+assess.SlotsNeeded, 10)
	senders := max(src.MaxSenders, slots, 10)
	logical := max(f.MaxLogicalWorkers, 4)
	return []Setting{
		{Name: "wal_level", Value: "logical", RDSName: "rds.logical_replication", RDSValue: "1", Restart: true, AtLeast: true,
			num: walLevelRank("logical"), kind: kindWalLevel,
			Reason: "reverse replication after cutover streams the target's writes back to the source, so a rollback loses none: the target must decode its WAL (on RDS: rds.logical_replication = 1)"},
		numberSetting("max_replication_slots", slots, true, true,
			fmt.Sprintf("the source allows %d slots (%d in use) and the target takes over their work; reverse replication needs %d of pgshift's", src.MaxSlots, src.UsedSlots, assess.SlotsNeeded)),
		numberSetting("max_wal_senders", senders, true, true,
			fmt.Sprintf("at least one per slot (%d) so every slot can stream, and the source had %d", slots, src.MaxSenders)),
		numberSetting("max_logical_replication_workers", logical, true, true,
			fmt.Sprintf("the source's %d, so subscriptions moved with the database keep their workers (at least the default 4)", f.MaxLogicalWorkers)),
	}
}

// preloadLibraries keeps what the source preloads (its extensions need the same libraries)
// and adds pg_stat_statements and auto_explain, the case study's monitoring, where the target
// has PostgreSQL's contrib modules or is not known. A library the target lacks would stop it
// from starting, so with a target that has no contrib only the source's own list is kept.
func preloadLibraries(f Facts) ([]string, string, string) {
	libs := slices.Clone(f.PreloadLibraries)
	addContrib := f.Target == nil || f.TargetHasContrib
	var added []string
	if addContrib {
		for _, l := range []string{"pg_stat_statements", "auto_explain"} {
			if !slices.Contains(libs, l) {
				libs = append(libs, l)
				added = append(added, l)
			}
		}
	}
	note := ""
	if !addContrib {
		note = "pg_stat_statements and auto_explain are not added to shared_preload_libraries: the target offers no pg_stat_statements, so PostgreSQL's contrib modules are not installed there (a preloaded library that is missing stops the server from starting)"
	}
	if len(libs) == 0 {
		return nil, "", note
	}
	var parts []string
	if len(f.PreloadLibraries) > 0 {
		parts = append(parts, "the source preloads "+strings.Join(f.PreloadLibraries, ", ")+" (its extensions need them)")
	}
	if len(added) > 0 {
		parts = append(parts, strings.Join(added, " and ")+" for query statistics and slow plans, as the case study ran (set auto_explain.log_min_duration after the restart)")
	}
	if f.Target == nil && addContrib && len(added) > 0 {
		note = "shared_preload_libraries assumes the target has PostgreSQL's contrib modules (RDS and most packages do): check before a restart, as a missing library stops the server from starting"
	}
	return libs, strings.Join(parts, "; "), note
}

func bytesSetting(name string, b int64, unit int64, restart bool, reason string) Setting {
	return Setting{Name: name, Value: pgSize(b), RDSValue: strconv.FormatInt(b/unit, 10), Restart: restart, Reason: reason,
		num: float64(b), kind: kindBytes}
}

func atLeast(s Setting) Setting {
	s.AtLeast = true
	return s
}

func numberSetting(name string, n int, restart, atLeast bool, reason string) Setting {
	return Setting{Name: name, Value: strconv.Itoa(n), RDSValue: strconv.Itoa(n), Restart: restart, AtLeast: atLeast, Reason: reason,
		num: float64(n), kind: kindNumber}
}

// needsChange compares a recommendation with the target's value. Sizes and times are
// compared in bytes and seconds; "exact" numbers within 1% count as equal.
func needsChange(s Setting, cur Current) bool {
	switch s.kind {
	case kindList:
		have := splitList(cur.Setting)
		for _, l := range s.List {
			if !slices.Contains(have, l) {
				return true
			}
		}
		return false
	case kindWalLevel:
		return walLevelRank(cur.Setting) < s.num
	}
	v, err := strconv.ParseFloat(cur.Setting, 64)
	if err != nil {
		return true
	}
	v *= unitFactor(cur.Unit)
	if s.AtLeast {
		return v < s.num
	}
	return math.Abs(v-s.num) > 0.01*math.Max(s.num, 1)
}

// unitFactor turns a pg_settings unit into bytes or seconds.
func unitFactor(unit string) float64 {
	switch unit {
	case "B":
		return 1
	case "kB":
		return 1 << 10
	case "8kB":
		return 8 << 10
	case "16kB":
		return 16 << 10
	case "MB":
		return 1 << 20
	case "ms":
		return 0.001
	case "s":
		return 1
	case "min":
		return 60
	}
	return 1
}

func walLevelRank(level string) float64 {
	return float64(slices.Index([]string{"minimal", "replica", "logical"}, level))
}

// splitList splits a list setting as PostgreSQL prints it ("a, b" or `"a", b`).
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if p := strings.Trim(strings.TrimSpace(part), `"`); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// display shows a target value with its unit, in the same spelling as the plan's values.
func display(c Current) string {
	f := unitFactor(c.Unit)
	switch c.Unit {
	case "B", "kB", "8kB", "16kB", "MB":
		if v, err := strconv.ParseFloat(c.Setting, 64); err == nil {
			return pgSize(int64(v * f))
		}
	case "ms", "s", "min":
		if v, err := strconv.ParseFloat(c.Setting, 64); err == nil {
			return fmt.Sprintf("%gs", v*f)
		}
	}
	return c.Setting
}

// pgSize spells bytes as PostgreSQL accepts them, in the largest unit that divides them.
func pgSize(b int64) string {
	for _, u := range []struct {
		n    int64
		name string
	}{{1 << 40, "TB"}, {1 << 30, "GB"}, {1 << 20, "MB"}, {1 << 10, "kB"}} {
		if b >= u.n && b%u.n == 0 {
			return fmt.Sprintf("%d%s", b/u.n, u.name)
		}
	}
	return fmt.Sprintf("%dkB", b>>10)
}

// human is a size for people: one decimal where it matters.
func human(b int64) string {
	v := float64(b)
	for _, u := range []string{"B", "kB", "MB", "GB", "TB"} {
		if math.Abs(v) < 1024 || u == "TB" {
			if u == "B" || v >= 100 || v == math.Trunc(v) {
				return fmt.Sprintf("%.0f%s", v, u)
			}
			return fmt.Sprintf("%.1f%s", v, u)
		}
		v /= 1024
	}
	return ""
}

func roundDur(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	case d >= time.Minute:
		return d.Round(time.Second).String()
	default:
		return d.Round(100 * time.Millisecond).String()
	}
}

func roundUp(v, unit int64) int64 {
	if v <= 0 {
		return 0
	}
	return (v + unit - 1) / unit * unit
}

func roundDown(v, unit int64) int64 { return v / unit * unit }

// settingByName finds a setting of a plan by its name.
func settingByName(settings []Setting, name string) (Setting, bool) {
	i := slices.IndexFunc(settings, func(s Setting) bool { return s.Name == name })
	if i < 0 {
		return Setting{}, false
	}
	return settings[i], true
}
