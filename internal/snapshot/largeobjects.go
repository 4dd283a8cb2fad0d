package snapshot

// Large objects: rows of pg_largeobject, not of a user table, so neither COPY of the tables nor
// logical decoding carries them. SyncLargeObjects makes the target's large objects the
// source's, by OID (a table's oid column names them): it copies what is new, rewrites what
// changed, removes what the source no longer has, and gives each its owner, privileges and
// comment. The copy runs it in the slot's snapshot; cutover runs it again (in the pause, where
// nothing changes on the source any more) to bring over what changed since.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// LargeObjectOptions control SyncLargeObjects.
type LargeObjectOptions struct {
	// Snapshot is the exported snapshot the source is read in; "" reads in a snapshot of its
	// own (REPEATABLE READ), as cutover does.
	Snapshot string
	// NoOwner leaves large objects to the target user; NoPrivileges leaves their privileges
	// as the target gives them (as pg_restore's options).
	NoOwner, NoPrivileges bool
	// BatchBytes and BatchCount bound one target transaction (default 64 MiB, 1000 objects): a
	// kill loses at most one batch, and the next run finds the others already equal.
	BatchBytes int64
	BatchCount int
	Log        *slog.Logger
	// SourceConn and TargetConn, when set, are open sessions (not in a transaction) used
	// instead of new ones: the cutover's pause has them already, and a login costs
	// milliseconds there. They are left open.
	SourceConn, TargetConn *pgx.Conn
}

// LargeObjectResult is what SyncLargeObjects did.
type LargeObjectResult struct {
	Copied    int   // created or rewritten on the target (new, or contents changed)
	Updated   int   // owner, privileges or comment changed only
	Removed   int   // gone from the source, removed from the target
	Unchanged int   // already equal
	Bytes     int64 // contents written
}

// SyncLargeObjects makes the target's large objects equal to the source's (see the file
// comment). It is idempotent: objects already equal are only compared, by size and a hash
// computed on each server, so running it again after an interruption redoes only what is left.
func SyncLargeObjects(ctx context.Context, src, dst db.Endpoint, opts LargeObjectOptions) (LargeObjectResult, error) {
	var res LargeObjectResult
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 64 << 20
	}
	if opts.BatchCount <= 0 {
		opts.BatchCount = 1000
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Snapshot != "" && !snapshotNameRE.MatchString(opts.Snapshot) {
		return res, fmt.Errorf("invalid exported snapshot name %q", opts.Snapshot)
	}
	srcConn := opts.SourceConn
	if srcConn == nil {
		c, err := src.Connect(ctx)
		if err != nil {
			return res, err
		}
		defer c.Close(context.WithoutCancel(ctx))
		srcConn = c
	}
	srcTx, err := srcConn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return res, fmt.Errorf("large objects: %w", src.Describe(err))
	}
	defer srcTx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only
	if opts.Snapshot != "" {
		if _, err := srcTx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+opts.Snapshot+"'"); err != nil {
			return res, fmt.Errorf("large objects: import the copy snapshot %s on the source: %w", opts.Snapshot, src.Describe(err))
		}
	}
	srcList, err := catalog.LargeObjects(ctx, srcTx)
	if err != nil {
		return res, fmt.Errorf("on the source: %w", src.Describe(err))
	}
	dstConn := opts.TargetConn
	if dstConn == nil {
		c, err := dst.Connect(ctx)
		if err != nil {
			return res, err
		}
		defer c.Close(context.WithoutCancel(ctx))
		dstConn = c
	}
	dstList, err := catalog.LargeObjects(ctx, dstConn)
	if err != nil {
		return res, fmt.Errorf("on the target: %w", dst.Describe(err))
	}
	if len(srcList) == 0 && len(dstList) == 0 {
		return res, nil
	}
	onTarget := make(map[uint32]catalog.LargeObject, len(dstList))
	for _, lo := range dstList {
		onTarget[lo.OID] = lo
	}
	var both []uint32
	inSource := make(map[uint32]bool, len(srcList))
	for _, lo := range srcList {
		inSource[lo.OID] = true
		if _, ok := onTarget[lo.OID]; ok {
			both = append(both, lo.OID)
		}
	}
	// Contents are compared only where both sides have the object: a first copy hashes nothing.
	srcContent, err := catalog.LargeObjectContents(ctx, srcTx, both)
	if err != nil {
		return res, fmt.Errorf("on the source: %w%s", src.Describe(err), largeObjectHint(err))
	}
	dstContent, err := catalog.LargeObjectContents(ctx, dstConn, both)
	if err != nil {
		return res, fmt.Errorf("on the target: %w", dst.Describe(err))
	}

	w := &loWriter{src: srcTx, dst: dstConn, opts: opts, res: &res, srcEP: src, dstEP: dst}
	for _, lo := range dstList {
		if !inSource[lo.OID] {
			if err := w.add(ctx, loWork{oid: lo.OID, remove: true, exists: true}); err != nil {
				return res, err
			}
		}
	}
	for _, lo := range srcList {
		t, exists := onTarget[lo.OID]
		work := loWork{oid: lo.OID, want: lo, have: t, exists: exists}
		switch {
		case !exists:
			work.copy = true
		case srcContent[lo.OID] != dstContent[lo.OID]:
			work.copy, work.remove = true, true
		case w.metadataDiffers(lo, t):
		default:
			res.Unchanged++
			continue
		}
		if err := w.add(ctx, work); err != nil {
			return res, err
		}
	}
	return res, w.flush(ctx)
}

// largeObjectHint explains a permission failure reading large objects on the source.
func largeObjectHint(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return " (the source user may not read every large object: connect as a superuser, GRANT SELECT ON LARGE OBJECT ... to it, or set lo_compat_privileges = on for the migration)"
	}
	return ""
}

// loWork is what one large object needs on the target.
type loWork struct {
	oid        uint32
	want, have catalog.LargeObject
	exists     bool
	remove     bool // lo_unlink first (gone from the source, or its contents changed)
	copy       bool // create it and copy its contents
}

// loWriter applies loWork in batches, each in one target transaction.
type loWriter struct {
	src          pgx.Tx
	dst          *pgx.Conn
	srcEP, dstEP db.Endpoint
	opts         LargeObjectOptions
	res          *LargeObjectResult
	pending      []loWork
}

// metadataDiffers compares what the options keep. Privileges name the owner (as grantor and
// grantee), so without owners they are granted when an object is created but not compared.
func (w *loWriter) metadataDiffers(want, have catalog.LargeObject) bool {
	return (!w.opts.NoOwner && want.Owner != have.Owner) || (w.keepsACL() && want.ACL != have.ACL) || want.Comment != have.Comment
}

func (w *loWriter) keepsACL() bool { return !w.opts.NoOwner && !w.opts.NoPrivileges }

func (w *loWriter) add(ctx context.Context, work loWork) error {
	w.pending = append(w.pending, work)
	if len(w.pending) >= w.opts.BatchCount {
		return w.flush(ctx)
	}
	return nil
}

// flush applies the pending work in one target transaction per BatchBytes of contents.
func (w *loWriter) flush(ctx context.Context) error {
	for len(w.pending) > 0 {
		var written int64
		n := 0
		err := pgx.BeginFunc(ctx, w.dst, func(tx pgx.Tx) error {
			for n < len(w.pending) && written < w.opts.BatchBytes {
				b, err := w.apply(ctx, tx, w.pending[n])
				if err != nil {
					return err
				}
				written += b
				n++
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, work := range w.pending[:n] {
			switch {
			case work.copy:
				w.res.Copied++
			case work.remove:
				w.res.Removed++
			default:
				w.res.Updated++
			}
		}
		w.res.Bytes += written
		w.pending = w.pending[n:]
	}
	return nil
}

// apply brings one large object to the source's state inside tx; it returns the bytes written.
func (w *loWriter) apply(ctx context.Context, tx pgx.Tx, work loWork) (int64, error) {
	oid := strconv.FormatUint(uint64(work.oid), 10)
	fail := func(what string, err error) (int64, error) {
		return 0, fmt.Errorf("large object %s: %s on the target: %w", oid, what, w.dstEP.Describe(err))
	}
	if work.remove && work.exists {
		if _, err := tx.Exec(ctx, `SELECT pg_catalog.lo_unlink($1::oid)`, work.oid); err != nil {
			return fail("remove", err)
		}
		work.have = catalog.LargeObject{}
	}
	if !work.copy {
		if work.remove {
			return 0, nil
		}
		return 0, w.metadata(ctx, tx, work)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_catalog.lo_create($1::oid)`, work.oid); err != nil {
		return fail("create", err)
	}
	var written int64
	for off := int64(0); ; off += catalog.LargeObjectChunk {
		var data []byte
		if err := w.src.QueryRow(ctx, `SELECT pg_catalog.lo_get($1::oid, $2::bigint, $3::int)`, work.oid, off, catalog.LargeObjectChunk).Scan(&data); err != nil {
			return 0, fmt.Errorf("large object %s: read on the source: %w%s", oid, w.srcEP.Describe(err), largeObjectHint(err))
		}
		if len(data) > 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_catalog.lo_put($1::oid, $2::bigint, $3::bytea)`, work.oid, off, data); err != nil {
				return fail("write", err)
			}
		}
		written += int64(len(data))
		if len(data) < catalog.LargeObjectChunk {
			break
		}
	}
	// A new object belongs to the target user with the default privileges and no comment.
	var have catalog.LargeObject
	if err := tx.QueryRow(ctx, `SELECT pg_catalog.pg_get_userbyid(lomowner),
		array_to_string(ARRAY(SELECT a::text FROM unnest(coalesce(lomacl, pg_catalog.acldefault('L', lomowner))) a ORDER BY 1), ',')
		FROM pg_catalog.pg_largeobject_metadata WHERE oid = $1::oid`, work.oid).Scan(&have.Owner, &have.ACL); err != nil {
		return fail("read back", err)
	}
	work.have = have
	return written, w.metadata(ctx, tx, work)
}

// metadata gives the target's object the source's owner, privileges and comment. Privileges
// are granted as the source's grantor (SET ROLE), as pg_dump does, so the ACLs compare equal.
func (w *loWriter) metadata(ctx context.Context, tx pgx.Tx, work loWork) error {
	oid := strconv.FormatUint(uint64(work.oid), 10)
	obj := "LARGE OBJECT " + oid
	exec := func(what, sql string, args ...any) error {
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("large object %s: %s on the target: %w", oid, what, w.dstEP.Describe(err))
		}
		return nil
	}
	if !w.opts.NoOwner && work.want.Owner != work.have.Owner {
		if err := exec("set owner", "ALTER "+obj+" OWNER TO "+pgtypes.QuoteIdent(work.want.Owner)); err != nil {
			return err
		}
	}
	created := work.copy
	if !w.opts.NoPrivileges && work.want.ACL != work.have.ACL && (w.keepsACL() || created) {
		// Start from nothing, then grant exactly the source's list.
		rows, err := tx.Query(ctx, `SELECT DISTINCT CASE WHEN a.grantee = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(a.grantee) END
			FROM pg_catalog.pg_largeobject_metadata m, aclexplode(coalesce(m.lomacl, pg_catalog.acldefault('L', m.lomowner))) a WHERE m.oid = $1::oid`, work.oid)
		if err != nil {
			return fmt.Errorf("large object %s: read privileges on the target: %w", oid, w.dstEP.Describe(err))
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("large object %s: read privileges on the target: %w", oid, w.dstEP.Describe(err))
		}
		grantees := make([]string, len(names))
		for i, n := range names {
			grantees[i] = granteeSQL(n)
		}
		if len(grantees) > 0 {
			// CASCADE: grants made by other grantors hang on the owner's grant options.
			if err := exec("revoke privileges", "REVOKE ALL ON "+obj+" FROM "+strings.Join(grantees, ", ")+" CASCADE"); err != nil {
				return err
			}
		}
		grants, err := sourceGrants(ctx, w.src, work.oid)
		if err != nil {
			return fmt.Errorf("large object %s: read privileges on the source: %w", oid, w.srcEP.Describe(err))
		}
		if grants, err = grantOrder(grants, work.want.Owner); err != nil {
			return fmt.Errorf("large object %s: %w", oid, err)
		}
		for _, g := range grants {
			if !privilegeRE.MatchString(g.privilege) {
				return fmt.Errorf("large object %s: unexpected privilege %q on the source", oid, g.privilege)
			}
			asGrantor := g.grantor != work.want.Owner
			if w.opts.NoOwner {
				// The target user owns the object: the source owner's own entry is not granted,
				// and the target user grants the rest itself.
				if g.grantee == work.want.Owner {
					continue
				}
				asGrantor = false
			}
			stmt := "GRANT " + g.privilege + " ON " + obj + " TO " + granteeSQL(g.grantee)
			if g.grantable {
				stmt += " WITH GRANT OPTION"
			}
			if asGrantor {
				if err := exec("grant", "SET LOCAL ROLE "+pgtypes.QuoteIdent(g.grantor)); err != nil {
					return err
				}
			}
			if err := exec("grant", stmt); err != nil {
				return err
			}
			if asGrantor {
				if err := exec("grant", "RESET ROLE"); err != nil {
					return err
				}
			}
		}
	}
	if work.want.Comment != work.have.Comment {
		// COMMENT takes no parameters: the server quotes the text itself.
		var stmt string
		if err := tx.QueryRow(ctx, `SELECT format('COMMENT ON LARGE OBJECT %s IS %L', $1::oid, nullif($2::text, ''))`, work.oid, work.want.Comment).Scan(&stmt); err != nil {
			return fmt.Errorf("large object %s: comment: %w", oid, err)
		}
		if err := exec("comment", stmt); err != nil {
			return err
		}
	}
	return nil
}

var privilegeRE = regexp.MustCompile(`^[A-Z]+$`)

type loGrant struct {
	grantor, grantee, privilege string
	grantable                   bool
}

// grantOrder orders grants so that each grantor holds the privilege WITH GRANT OPTION before
// it grants it: the owner's grants first, then those of the roles the owner gave the option
// to, and so on.
func grantOrder(grants []loGrant, owner string) ([]loGrant, error) {
	holds := map[string]bool{} // grantee + privilege with grant option
	var out []loGrant
	for len(grants) > 0 {
		var rest []loGrant
		for _, g := range grants {
			if g.grantor == owner || holds[g.grantor+"\x00"+g.privilege] {
				out = append(out, g)
				if g.grantable {
					holds[g.grantee+"\x00"+g.privilege] = true
				}
			} else {
				rest = append(rest, g)
			}
		}
		if len(rest) == len(grants) {
			return nil, fmt.Errorf("privileges granted by %s, which holds no grant option for them", rest[0].grantor)
		}
		grants = rest
	}
	return out, nil
}

// granteeSQL renders a grantee for GRANT and REVOKE: "" is PUBLIC.
func granteeSQL(name string) string {
	if name == "" {
		return "PUBLIC"
	}
	return pgtypes.QuoteIdent(name)
}

// sourceGrants lists a source large object's privileges ("" grantee: PUBLIC).
func sourceGrants(ctx context.Context, q catalog.Querier, oid uint32) ([]loGrant, error) {
	rows, err := q.Query(ctx, `SELECT pg_catalog.pg_get_userbyid(a.grantor),
		CASE WHEN a.grantee = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable
		FROM pg_catalog.pg_largeobject_metadata m, aclexplode(coalesce(m.lomacl, pg_catalog.acldefault('L', m.lomowner))) a
		WHERE m.oid = $1::oid ORDER BY 1, 2, 3`, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (loGrant, error) {
		var g loGrant
		err := r.Scan(&g.grantor, &g.grantee, &g.privilege, &g.grantable)
		return g, err
	})
}
