package verify

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// repair rewrites the differing rows on the target from the source's current values, one
// transaction per table, with session_replication_role = replica so that triggers and foreign
// keys on the target do not fire (the rows are being made equal to the source, where those
// rules already held). Unstable rows are never touched: while the target is being followed,
// only rows the re-check proved stable are repaired. After each table, exactly the repaired
// rows are compared again and what still differs is reported.
func (v *verifier) repair(ctx context.Context, plans []*tablePlan, rep *Report) error {
	if v.opts.Mode == ModeCount {
		rep.Notes = append(rep.Notes, "--repair needs row keys: count mode finds none; run with --mode checksum")
		return nil
	}
	for _, p := range plans {
		var todo []*RowDiff
		for _, d := range p.diffs {
			if d.Kind != KindUnstable {
				todo = append(todo, d)
			}
		}
		if len(todo) == 0 {
			continue
		}
		r := RepairResult{Table: p.id.String()}
		var err error
		if p.keyed {
			err = v.repairKeyed(ctx, p, todo, &r)
		} else {
			err = v.repairMultiset(ctx, p, todo, &r)
		}
		if err == nil {
			err = v.reverify(ctx, p, todo, &r)
		}
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			r.Error = err.Error()
			v.log.Error("repair failed", "table", p.id.String(), "error", err)
		} else {
			v.log.Info("repaired rows on the target", "table", p.id.String(), "deleted", r.Deleted,
				"inserted", r.Inserted, "still_different", r.Remaining)
		}
		if p.res.Differences > int64(len(p.diffs)) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: only the first %d differing rows were repaired; run verify --repair again for the rest",
				p.id, len(p.diffs)))
		}
		rep.Repair = append(rep.Repair, r)
	}
	if rep.Sequences != nil {
		for i := range rep.Sequences.Diffs {
			d := &rep.Sequences.Diffs[i]
			if err := v.repairSequence(ctx, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// insertColumns are the compared columns the target accepts values for: generated columns are
// computed by the target itself.
func (p *tablePlan) insertColumns() (names []string, idx []int, identityAlways bool) {
	for i, c := range p.cols {
		if c.Generated {
			continue
		}
		if c.Identity == "a" {
			identityAlways = true
		}
		names = append(names, c.Name)
		idx = append(idx, i)
	}
	return names, idx, identityAlways
}

// insertSQL inserts rows given as parallel text arrays, one per column, cast to the target's types.
func (p *tablePlan) insertSQL() (string, []int) {
	names, idx, always := p.insertColumns()
	sel := make([]string, len(names))
	params := make([]string, len(names))
	aliases := make([]string, len(names))
	for i, n := range names {
		params[i] = "$" + strconv.Itoa(i+1) + "::text[]"
		aliases[i] = "c" + strconv.Itoa(i)
		sel[i] = "u.c" + strconv.Itoa(i) + "::" + p.tgtTypes[n]
	}
	over := ""
	if always {
		over = " OVERRIDING SYSTEM VALUE"
	}
	qn := make([]string, len(names))
	for i, n := range names {
		qn[i] = pgtypes.QuoteIdent(n)
	}
	return fmt.Sprintf(`INSERT INTO %s (%s)%s SELECT %s FROM unnest(%s) AS u(%s)`, p.id.Sanitize(), strings.Join(qn, ", "), over,
		strings.Join(sel, ", "), strings.Join(params, ", "), strings.Join(aliases, ", ")), idx
}

// writeTx runs fn in a target transaction set up for repair.
func (v *verifier) writeTx(ctx context.Context, fn func(pgx.Tx) error) error {
	conn, err := v.tgt.Pool.Acquire(ctx)
	if err != nil {
		return v.tgt.Endpoint.Describe(err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return v.tgt.Endpoint.Describe(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica; "+sessionSettings(v.tgt.info.Features())); err != nil {
		return v.tgt.Endpoint.Describe(fmt.Errorf("set session_replication_role = replica for repair (needs superuser, or GRANT SET ON PARAMETER session_replication_role): %w", err))
	}
	if err := fn(tx); err != nil {
		return v.tgt.Endpoint.Describe(err)
	}
	return v.tgt.Endpoint.Describe(tx.Commit(ctx))
}

func (v *verifier) repairKeyed(ctx context.Context, p *tablePlan, todo []*RowDiff, r *RepairResult) error {
	keys := make([][]string, len(todo))
	for i, d := range todo {
		keys[i] = d.keyVals
	}
	src, err := v.valuesByKey(ctx, v.src, p.src, len(p.keyCols), keys, false)
	if err != nil {
		return err
	}
	ins, idx := p.insertSQL()
	return v.writeTx(ctx, func(tx pgx.Tx) error {
		for start := 0; start < len(keys); start += batchKeys {
			batch := keys[start:min(start+batchKeys, len(keys))]
			del, a := p.tgt.deleteByKeysSQL(batch)
			tag, err := tx.Exec(ctx, del, a...)
			if err != nil {
				return fmt.Errorf("delete differing rows of %s: %w", p.id, err)
			}
			r.Deleted += tag.RowsAffected()
			cols := make([][]*string, len(idx))
			for _, k := range batch {
				vals, ok := src[keyString(k)]
				if !ok {
					continue // extra on the target: deleting it was the repair
				}
				for j, i := range idx {
					cols[j] = append(cols[j], vals[i])
				}
			}
			if len(cols) == 0 || len(cols[0]) == 0 {
				continue
			}
			params := make([]any, len(cols))
			for j := range cols {
				params[j] = cols[j]
			}
			tag, err = tx.Exec(ctx, ins, params...)
			if err != nil {
				return fmt.Errorf("insert source rows into %s: %w", p.id, err)
			}
			r.Inserted += tag.RowsAffected()
		}
		return nil
	})
}

func (v *verifier) repairMultiset(ctx context.Context, p *tablePlan, todo []*RowDiff, r *RepairResult) error {
	hashes := make([]int64, len(todo))
	for i, d := range todo {
		hashes[i] = d.hash()
	}
	ins, idx := p.insertSQL()
	// Every copy of each differing row on the source, column by column.
	cols := make([][]*string, len(idx))
	var n int64 // source rows to insert: a table without insertable columns has no values to count them by
	err := v.src.read(ctx, false, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT %s FROM %s AS x WHERE %s = ANY($1::bigint[])`,
			p.src.colsText(), p.src.table, p.src.rowHash()), hashes)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			vals := make([]*string, len(p.cols))
			ptrs := make([]any, len(vals))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return err
			}
			for j, i := range idx {
				cols[j] = append(cols[j], vals[i])
			}
			n++
		}
		return rows.Err()
	})
	if err != nil {
		return v.src.Endpoint.Describe(err)
	}
	return v.writeTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, fmt.Sprintf(`DELETE FROM %s AS x WHERE %s = ANY($1::bigint[])`, p.tgt.table, p.tgt.rowHash()), hashes)
		if err != nil {
			return fmt.Errorf("delete differing rows of %s: %w", p.id, err)
		}
		r.Deleted = tag.RowsAffected()
		if n == 0 {
			return nil
		}
		if len(idx) == 0 {
			// No column takes a value (none at all, or only generated ones): insert n rows of
			// defaults, which is what each of them is on the source.
			tag, err = tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s SELECT FROM generate_series(1, $1::bigint)`, p.tgt.table), n)
			if err != nil {
				return fmt.Errorf("insert source rows into %s: %w", p.id, err)
			}
			r.Inserted = tag.RowsAffected()
			return nil
		}
		params := make([]any, len(cols))
		for j := range cols {
			params[j] = cols[j]
		}
		tag, err = tx.Exec(ctx, ins, params...)
		if err != nil {
			return fmt.Errorf("insert source rows into %s: %w", p.id, err)
		}
		r.Inserted = tag.RowsAffected()
		return nil
	})
}

// reverify compares exactly the repaired rows again on both sides.
func (v *verifier) reverify(ctx context.Context, p *tablePlan, todo []*RowDiff, r *RepairResult) error {
	pending := map[*tablePlan][]*RowDiff{p: todo}
	src, err := v.recheckRead(ctx, v.src, pending, false)
	if err != nil {
		return err
	}
	tgt, err := v.recheckRead(ctx, v.tgt, pending, false)
	if err != nil {
		return err
	}
	for _, d := range todo {
		id := d.recheckID()
		if src[p][id] != tgt[p][id] {
			r.Remaining++
		} else {
			d.Repaired = true
		}
	}
	return nil
}

// repairSequence moves a target sequence that is behind up to the source's state. One ahead
// is left alone: moving it back could hand out values the target has already used.
func (v *verifier) repairSequence(ctx context.Context, d *SequenceDiff) error {
	if d.Behind <= 0 {
		v.log.Warn("not repairing a target sequence ahead of the source", "sequence", d.Name, "ahead", -d.Behind)
		return nil
	}
	conn, err := v.tgt.Pool.Acquire(ctx)
	if err != nil {
		return v.tgt.Endpoint.Describe(err)
	}
	defer conn.Release()
	_, err = conn.Exec(ctx, `SELECT pg_catalog.setval($1::text::pg_catalog.regclass, $2::bigint, $3::boolean)`, d.seq.Sanitize(), d.Source, d.SourceCalled)
	if err != nil {
		v.log.Error("repair sequence failed", "sequence", d.Name, "error", err)
		return nil
	}
	d.Repaired = true
	v.log.Info("repaired sequence on the target", "sequence", d.Name, "value", d.Source)
	return nil
}
