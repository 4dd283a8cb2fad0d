// Package torture is pgshift's generative differential test: it draws a random schema and
// data set from the whole space the product must survive (every type family and edge value,
// every kind of key and replica identity, partitions, inheritance, triggers, RLS, sequences,
// odd identifiers), runs the real pgshift binary (`pgshift copy`/`run`, then `wait` and
// `verify`) from a throwaway source cluster to a throwaway target cluster while concurrent
// clients write random transactions to the source and a chaos schedule kills the agent,
// restarts the servers and changes the schema, and finally judges the target with an oracle
// that shares no code with pgshift: per-table row counts and md5 digests of every row's text
// form in byte order (leaf partitions and inheritance children read with ONLY), sequence
// positions, and `pg_dump --schema-only` of both sides.
//
// A draw that pgshift documents as unsupported (a table without replica identity) is judged
// too: pgshift must refuse it, naming the table, before creating anything on either side.
//
// # One case
//
// Create the draw's schema and rows on the source → `pgshift run` (or `pgshift copy
// --chunk-size 1` first), killed with SIGKILL during the copy at drawn moments and run again →
// when the copy is complete and nothing ran meanwhile, the oracle checks the copy alone →
// clients write to the source while the agent is killed and restarted, the servers restarted
// (fast and crash), columns added and renamed, partitions created, a second agent started,
// and synchronous_commit = off commits checked right after `pgshift wait` → the workload
// stops → `pgshift wait` → the oracle → `pgshift verify`, whose verdict must agree with the
// oracle's → SIGTERM, which must end the agent with exit 0.
//
// # Knobs (environment)
//
//	PGSHIFT_TORTURE_DURATION   budget of the whole run (default 2m; bench/torture.sh 1h)
//	PGSHIFT_TORTURE_CASES      at most this many random cases
//	PGSHIFT_TORTURE_SEED       replay exactly this one case
//	PGSHIFT_TORTURE_BASE_SEED  replay a whole run (its case seeds derive from it); unset, CIBaseSeed (bench/torture.sh sets a new one)
//	PGSHIFT_TORTURE_CLASSES    generator classes: "-xml,-rls" off, "none,+int" from nothing,
//	                           "++ddl" on and used by every draw that can (see allClasses)
//	PGSHIFT_TORTURE_SCALE      multiplies data sizes and workload durations
//	PGSHIFT_TORTURE_SEEDS_ONLY=1 / _SKIP_SEEDS=1   only / no regression seeds
//	PGSHIFT_TORTURE_SUMMARY    file for the run's summary (JSON, and .txt beside it)
//	PGSHIFT_TORTURE_HOLD       keep a failed case's databases this long, for psql
//	PGSHIFT_TORTURE_DDL=stop|follow every case runs pgshift with that ddl setting (follow: drawn DDL is made on the source only and must be replayed without a stop);
//	                            unset, each case its own: regression seeds as their line says (ddl=..., else stop), random cases follow when their seed is odd
//	PGSHIFT_TORTURE_AGENT_ARGS extra flags for every pgshift run, e.g. "--log-level debug"
//	PGSHIFT_TORTURE_GENCHECK   TestGeneratorSetup: create this many seeds' schemas and data
//
// # Determinism
//
// Everything a case draws (schema, data, each client's transactions — each from its own
// stream —, the chaos schedule and its offsets) comes from one 64-bit seed and the classes, so
// a failing case is replayed with the command the test prints. What a seed cannot fix is
// timing: where exactly a SIGKILL or a restart lands in pgshift's work, how the clients'
// transactions interleave (and so which of them conflict, and which rows an UPDATE finds),
// and how the agent batches them. A failure that depends on timing may need a few replays.
//
// Regression seeds live in testdata/seeds.txt and always run first. Entry points: TestTorture
// (go test -run Torture ./internal/torture/, skipped with -short) and bench/torture.sh.
package torture
