// Package torture is pgshift's generative differential test: it draws a random schema and
// data set from the whole space the product must survive (every type family and edge value,
// every kind of key and replica identity, partitions, inheritance, triggers, RLS, sequences,
// odd identifiers), runs the real pgshift binary (`pgshift run`, then `wait` and `verify`)
// from a throwaway source cluster to a throwaway target cluster while concurrent clients write
// random transactions to the source and a chaos schedule kills the agent and restarts the
// servers, and finally judges the target with an oracle that shares no code with pgshift:
// per-table row counts and md5 digests of every row's text form in byte order, sequence
// positions, and `pg_dump --schema-only` of both sides.
//
// Everything a case draws (schema, data, each client's transactions, the chaos schedule) comes
// from one 64-bit seed, so a failing case is replayed with PGSHIFT_TORTURE_SEED=<seed>. What a
// seed cannot fix is timing: when exactly a SIGKILL lands, how the clients' transactions
// interleave and which rows an UPDATE finds. A failure that depends on timing may need a few
// replays (or a longer run) to show again.
//
// The harness drives pgshift only through its command line, and reads the databases only
// through its own SQL, so a defect shared by the engine and its own verify cannot hide.
//
// Entry points: TestTorture (go test -run Torture ./internal/torture/, skipped with -short) and
// bench/torture.sh. Regression seeds live in testdata/seeds.txt and always run first.
package torture
