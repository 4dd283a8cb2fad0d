package cutover

import (
	"context"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// TestReverseCarriesOrigin: what reverse replication applies to the source is marked with the
// replication origin pgshift_reverse: decoded from the forward slot (without consuming it),
// every transaction with row changes after the cutover carries an Origin message naming it,
// which is what the forward decoder drops (cdc.Options.DropOrigin).
func TestReverseCarriesOrigin(t *testing.T) {
	e := newEnv(t)
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := e.startWorkload(2)
	time.Sleep(500 * time.Millisecond)
	e.run(ctx, true)
	time.Sleep(time.Second)
	w.stop()
	e.waitSame()
	e.agent.stop() // frees the slots; the forward slot has not moved since the cutover
	var slot, pub, finalText string
	if err := pgxRow(ctx, e, `SELECT slot_name, publication_name, (SELECT forward_final_lsn::text FROM pgshift.cutover_state) FROM pgshift.migration`, &slot, &pub, &finalText); err != nil {
		t.Fatal(err)
	}
	final, err := pgtypes.ParseLSN(finalText)
	if err != nil {
		t.Fatal(err)
	}
	// Source transactions before the cutover's final forward position were the clients' own
	// (the slot's confirmed position may trail it); everything after is reverse replication's.
	conn, err := pgxConnect(ctx, e.cfg.Source)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes($1::name, NULL, NULL, 'proto_version', '1', 'publication_names', $2::text)`, slot, pub)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var txs, marked, changes int
	origin, inTx := "", false
	var commit pgtypes.LSN
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		msg, err := cdc.Decode(data, false)
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *cdc.BeginMsg:
			origin, inTx, changes, commit = "", true, 0, m.FinalLSN
		case *cdc.OriginMsg:
			origin = m.Name
		case *cdc.InsertMsg, *cdc.UpdateMsg, *cdc.DeleteMsg:
			changes++
		case *cdc.CommitMsg:
			if inTx && changes > 0 && commit >= final {
				txs++
				if origin == cdc.PgshiftOrigin {
					marked++
				} else {
					t.Errorf("transaction at %s with %d changes has origin %q", commit, changes, origin)
				}
			}
			inTx = false
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if txs == 0 {
		t.Fatal("no transaction applied by reverse replication was found in the forward slot")
	}
	t.Logf("%d transactions applied by reverse replication, %d carry origin %s", txs, marked, cdc.PgshiftOrigin)
}

// TestReverseOriginNone: reverse replication sends back only what was written on the target
// itself. On a 17 target pgoutput filters by origin = none: a row a session marked with
// another replication origin wrote there stays there, while the clients' rows through the
// proxy and a plain direct write reach the source.
func TestReverseOriginNone(t *testing.T) {
	e := newEnvVersions(t, 15, 17, nil, nil)
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := e.startWorkload(2)
	time.Sleep(500 * time.Millisecond)
	e.run(ctx, true)
	e.q(e.dst, `SELECT pg_catalog.pg_replication_origin_create('elsewhere')`)
	if out, err := e.dst.Psql(ctx, "shop", `SELECT pg_catalog.pg_replication_origin_session_setup('elsewhere');
		INSERT INTO accounts VALUES (900, 9);`); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	e.q(e.dst, `INSERT INTO accounts VALUES (901, 1)`)
	time.Sleep(time.Second)
	w.stop()
	deadline := time.Now().Add(30 * time.Second)
	for e.q(e.src, `SELECT count(*) FROM accounts WHERE id = 901`) != "1" {
		if time.Now().After(deadline) {
			t.Fatal("the target's direct write (no origin) did not reach the source")
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.check(t, e.src, "the source (reverse replication)")
	if got := e.q(e.src, `SELECT count(*) FROM accounts WHERE id = 900`); got != "0" {
		t.Errorf("a row written on the target under another replication origin reached the source")
	}
}
