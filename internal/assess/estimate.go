package assess

import (
	"fmt"
	"math"
)

// Throughput assumptions, in on-disk bytes per second per job, used when the source's read
// rate could not be measured. They are deliberately wide: COPY of narrow numeric rows runs
// near the low end, wide text/TOAST rows near the high end.
const (
	defaultCopyLow  = 20 << 20
	defaultCopyHigh = 100 << 20
	indexBuildLow   = 10 << 20
	indexBuildHigh  = 50 << 20
	// A job's copy rate relative to the measured read rate: the target parses the rows and
	// writes heap and WAL for what the source only reads.
	writeSideFast = 1.5
	writeSideSlow = 4
	// Creating one table or index (catalog work, one transaction each), in seconds; this
	// dominates for databases of many small tables.
	perObjectLow  = 0.002
	perObjectHigh = 0.008
)

// EstimateInput is what the copy-time estimate depends on.
type EstimateInput struct {
	Jobs       int
	DataBytes  int64 // heap + TOAST of the tables that are copied
	IndexBytes int64
	// Objects counts the tables and indexes created on the target.
	Objects int
	// MeasuredBytesPerSec is one job's measured source read rate (0: not measured).
	MeasuredBytesPerSec float64
	MeasuredTable       string
	MeasuredBytes       int64
}

// EstimateCopy returns the copy-time range. With a measured read rate m, each job copies at
// m/1.5 at the fast end and m/4 at the slow end (the target's parsing and writes cost more
// than the source's read); without a measurement it uses the stated default per-job range.
// The fast end runs all jobs in parallel, the slow end assumes contention for disks and cores
// halves the parallelism. Index builds are added at 10–50 MB/s per job (pgshift builds them
// after the data, in parallel), and 2–8 ms per table and index for creating them.
func EstimateCopy(in EstimateInput) Estimate {
	jobs := max(in.Jobs, 1)
	e := Estimate{Jobs: jobs, DataBytes: in.DataBytes, IndexBytes: in.IndexBytes}
	low, high := float64(defaultCopyLow), float64(defaultCopyHigh)
	basis := fmt.Sprintf("not measured; assumed %s–%s/s per job", humanBytes(int64(low)), humanBytes(int64(high)))
	if in.MeasuredBytesPerSec > 0 {
		e.MeasuredBytesPerSec = in.MeasuredBytesPerSec
		e.MeasuredTable = in.MeasuredTable
		high = in.MeasuredBytesPerSec / writeSideFast
		low = in.MeasuredBytesPerSec / writeSideSlow
		basis = fmt.Sprintf("measured: one COPY of %s from %s read at %s/s; each job is assumed to copy at %s–%s/s once the target's writes are counted",
			humanBytes(in.MeasuredBytes), in.MeasuredTable, humanBytes(int64(in.MeasuredBytesPerSec)), humanBytes(int64(low)), humanBytes(int64(high)))
	}
	fast, slow := float64(jobs), math.Max(float64(jobs)/2, 1)
	data, idx, objs := float64(in.DataBytes), float64(in.IndexBytes), float64(in.Objects)
	e.LowSeconds = round1(data/(high*fast) + idx/(indexBuildHigh*fast) + objs*perObjectLow)
	e.HighSeconds = round1(data/(low*slow) + idx/(indexBuildLow*slow) + objs*perObjectHigh)
	e.Assumption = fmt.Sprintf("%s of table data copied by %d parallel jobs (%s), then %s of indexes built at %s–%s/s per job, plus 2–8 ms to create each of %d tables and indexes; the slow end assumes contention halves the parallelism; the network is assumed not to be the bottleneck",
		humanBytes(in.DataBytes), jobs, basis, humanBytes(in.IndexBytes), humanBytes(indexBuildLow), humanBytes(indexBuildHigh), in.Objects)
	return e
}

func round1(s float64) float64 { return math.Round(s*10) / 10 }
