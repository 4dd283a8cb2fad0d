// Package sqlparse is pgshift's one use of PostgreSQL's own parser (pganalyze/pg_query_go, cgo,
// imported by no other package, because its cold build is slow). It answers two questions about
// SQL text, each erring toward the safe side:
//
//   - classify.go: may a statement run on the target? The proxy's read routing (internal/proxy/route)
//     sends only statements it can prove read-only (a plain SELECT without locking clauses,
//     data-modifying CTEs, INTO, or functions that write, take locks or read session state);
//     anything else, including text that does not parse, is not.
//   - ddl.go: may a schema change captured on the source be replayed on the target (internal/apply)?
//     Only utility statements of the kinds it knows, without parts whose result could differ
//     between the two servers; anything else is refused with the reason.
package sqlparse

import (
	"strings"
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Statement is what the classifier learned about one query text (possibly several statements).
// It is shared between callers through the cache: treat it as read-only.
type Statement struct {
	// ReadOnly means every statement in the text is certainly read-only: it may run on the target.
	ReadOnly bool
	// BeginReadOnly is a lone BEGIN/START TRANSACTION READ ONLY: the whole transaction may go to
	// the target.
	BeginReadOnly bool
	// TxControl is BEGIN, COMMIT, ROLLBACK, SAVEPOINT and the like.
	TxControl bool
	// SessionState means the text changes session state another server would need to see: SET,
	// RESET, LISTEN, UNLISTEN, PREPARE, DEALLOCATE, DISCARD, DECLARE, LOAD.
	SessionState bool
	// TempObjects means the text creates temporary objects: the session must stay on the source.
	TempObjects bool
	// CopyFromStdin is a COPY ... FROM STDIN (during which the server ignores Sync).
	CopyFromStdin bool
	// Deallocate lists prepared statements the text deallocates; DeallocateAll means all of them
	// (DEALLOCATE ALL, DISCARD ALL).
	Deallocate    []string
	DeallocateAll bool
	// Tables are the relations the text reads, as written ("schema.table" or "table"), without
	// CTE names.
	Tables []string
	// Reason says why the text is or is not read-only, for metrics and SHOW ROUTES: "select",
	// "write", "locking", "function", "into", "cte-write", "parse-error", "utility", "empty".
	Reason string
}

// ClassifierOptions tune the classifier.
type ClassifierOptions struct {
	// AllowFunctions are functions (lower-case "name" or "schema.name") that may appear in a
	// statement routed to the target, in addition to the built-in list of known read-only ones.
	AllowFunctions []string
	// CatalogFunctions, when not nil, are the names of pg_catalog functions whose every overload
	// is immutable or stable (so, by PostgreSQL's contract, cannot modify the database) and that
	// have no namesake in any other schema (so an unqualified call cannot resolve to a user
	// function); the classifier accepts them unless they are on the deny list. Without it only
	// the built-in list is accepted.
	CatalogFunctions map[string]bool
	// CacheEntries bounds the cache of classified texts (default 10000).
	CacheEntries int
}

// Classifier classifies statement texts, caching the result by text. It is safe for concurrent use.
type Classifier struct {
	allow   map[string]bool
	catalog map[string]bool
	max     int

	mu    sync.RWMutex
	cache map[string]*Statement
}

// maxCachedText keeps one huge generated statement from holding memory in the cache.
const maxCachedText = 64 << 10

// NewClassifier returns a classifier.
func NewClassifier(opts ClassifierOptions) *Classifier {
	c := &Classifier{allow: map[string]bool{}, catalog: opts.CatalogFunctions, max: opts.CacheEntries, cache: map[string]*Statement{}}
	if c.max <= 0 {
		c.max = 10000
	}
	for _, f := range opts.AllowFunctions {
		c.allow[strings.ToLower(f)] = true
	}
	return c
}

// Classify classifies sql. The result is cached by the statement's shape (literals replaced)
// and shared: do not modify it.
func (c *Classifier) Classify(sql string) *Statement { return c.ClassifyBytes([]byte(sql)) }

// ClassifyBytes is Classify for a query held in a byte slice (a protocol buffer).
func (c *Classifier) ClassifyBytes(sql []byte) *Statement {
	var buf [256]byte
	key := cacheKey(buf[:0], sql)
	c.mu.RLock()
	st, ok := c.cache[string(key)]
	c.mu.RUnlock()
	if ok {
		return st
	}
	st = c.classify(string(sql))
	if len(key) <= maxCachedText {
		c.mu.Lock()
		if len(c.cache) >= c.max {
			// Evict an arbitrary entry: map order is unspecified, which is as good as random here.
			for k := range c.cache {
				delete(c.cache, k)
				break
			}
		}
		c.cache[string(key)] = st
		c.mu.Unlock()
	}
	return st
}

func (c *Classifier) classify(sql string) *Statement {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return &Statement{Reason: "parse-error"}
	}
	if len(tree.Stmts) == 0 {
		// An empty query is harmless anywhere, but nothing is gained by moving it.
		return &Statement{Reason: "empty"}
	}
	st := &Statement{ReadOnly: true, Reason: "select"}
	notRO := func(reason string) {
		if st.ReadOnly {
			st.ReadOnly = false
			st.Reason = reason
		}
	}
	for _, raw := range tree.Stmts {
		n := raw.GetStmt()
		switch {
		case n.GetSelectStmt() != nil:
			c.checkSelect(n.GetSelectStmt(), st, notRO)
		case n.GetTransactionStmt() != nil:
			ts := n.GetTransactionStmt()
			st.TxControl = true
			k := ts.GetKind()
			if len(tree.Stmts) == 1 && (k == pg_query.TransactionStmtKind_TRANS_STMT_BEGIN || k == pg_query.TransactionStmtKind_TRANS_STMT_START) && readOnlyOption(ts.GetOptions()) {
				st.BeginReadOnly = true
			}
			notRO("transaction")
		case n.GetVariableSetStmt() != nil, n.GetListenStmt() != nil, n.GetUnlistenStmt() != nil,
			n.GetPrepareStmt() != nil, n.GetDeclareCursorStmt() != nil, n.GetLoadStmt() != nil:
			st.SessionState = true
			notRO("session")
		case n.GetDeallocateStmt() != nil:
			st.SessionState = true
			d := n.GetDeallocateStmt()
			if d.GetIsall() || d.GetName() == "" {
				st.DeallocateAll = true
			} else {
				st.Deallocate = append(st.Deallocate, d.GetName())
			}
			notRO("session")
		case n.GetDiscardStmt() != nil:
			st.SessionState = true
			if t := n.GetDiscardStmt().GetTarget(); t == pg_query.DiscardMode_DISCARD_ALL {
				st.DeallocateAll = true
			}
			notRO("session")
		case n.GetCopyStmt() != nil:
			cs := n.GetCopyStmt()
			if cs.GetIsFrom() && cs.GetFilename() == "" && !cs.GetIsProgram() {
				st.CopyFromStdin = true
			}
			notRO("write")
		case n.GetCreateStmt() != nil:
			if rv := n.GetCreateStmt().GetRelation(); rv != nil && rv.GetRelpersistence() == "t" {
				st.TempObjects = true
			}
			notRO("write")
		case n.GetCreateTableAsStmt() != nil:
			if in := n.GetCreateTableAsStmt().GetInto(); in != nil && in.GetRel().GetRelpersistence() == "t" {
				st.TempObjects = true
			}
			notRO("write")
		case n.GetViewStmt() != nil:
			if rv := n.GetViewStmt().GetView(); rv != nil && rv.GetRelpersistence() == "t" {
				st.TempObjects = true
			}
			notRO("write")
		case n.GetCreateSeqStmt() != nil:
			if rv := n.GetCreateSeqStmt().GetSequence(); rv != nil && rv.GetRelpersistence() == "t" {
				st.TempObjects = true
			}
			notRO("write")
		case n.GetInsertStmt() != nil, n.GetUpdateStmt() != nil, n.GetDeleteStmt() != nil, n.GetMergeStmt() != nil:
			notRO("write")
		default:
			notRO("utility")
		}
	}
	if !st.ReadOnly {
		st.Tables = nil
	}
	return st
}

// readOnlyOption reports whether BEGIN's options include READ ONLY (transaction_read_only = 1).
func readOnlyOption(opts []*pg_query.Node) bool {
	ro := false
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || d.GetDefname() != "transaction_read_only" {
			continue
		}
		ac := d.GetArg().GetAConst()
		ro = ac != nil && ac.GetIval().GetIval() == 1
	}
	return ro
}

// checkSelect walks one SELECT's whole tree.
func (c *Classifier) checkSelect(sel *pg_query.SelectStmt, st *Statement, notRO func(string)) {
	if sel.GetIntoClause() != nil {
		notRO("into")
		if sel.GetIntoClause().GetRel().GetRelpersistence() == "t" {
			st.TempObjects = true
		}
		return
	}
	ctes := map[string]bool{}
	var tables []string
	walk(sel.ProtoReflect(), func(m protoreflect.Message) {
		switch n := m.Interface().(type) {
		case *pg_query.SelectStmt:
			if len(n.GetLockingClause()) > 0 {
				notRO("locking")
			}
			if n.GetIntoClause() != nil {
				notRO("into")
			}
		case *pg_query.CommonTableExpr:
			ctes[n.GetCtename()] = true
			if n.GetCtequery().GetSelectStmt() == nil {
				notRO("cte-write")
			}
		case *pg_query.FuncCall:
			if !c.safeFunction(n.GetFuncname()) {
				notRO("function")
			}
		case *pg_query.RangeVar:
			name := n.GetRelname()
			if n.GetSchemaname() != "" {
				name = n.GetSchemaname() + "." + name
			}
			tables = append(tables, name)
		}
	})
	for _, t := range tables {
		if !ctes[t] {
			st.Tables = appendUnique(st.Tables, t)
		}
	}
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// walk visits every message in the tree below m (m included), depth first.
func walk(m protoreflect.Message, visit func(protoreflect.Message)) {
	if !m.IsValid() {
		return
	}
	visit(m)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walk(l.Get(i).Message(), visit)
				}
			}
		case fd.Message() != nil:
			walk(v.Message(), visit)
		}
		return true
	})
}

// safeFunction decides whether a called function is known not to write, lock, or depend on
// session state that the target session lacks.
func (c *Classifier) safeFunction(name []*pg_query.Node) bool {
	parts := make([]string, 0, len(name))
	for _, n := range name {
		parts = append(parts, n.GetString_().GetSval())
	}
	full := strings.ToLower(strings.Join(parts, "."))
	if c.allow[full] {
		return true
	}
	fn := parts[len(parts)-1]
	if len(parts) > 1 && parts[0] != "pg_catalog" {
		return false // a user function, not allow-listed
	}
	if deniedFunction(fn) {
		return false
	}
	if c.allow[fn] || builtinReadOnly[fn] {
		return true
	}
	return c.catalog != nil && c.catalog[fn]
}

// deniedFunction lists the pg_catalog functions that write, take locks, change or read session
// state, or run SQL of their own: they never go to the target.
func deniedFunction(fn string) bool {
	if strings.HasPrefix(fn, "pg_advisory") || strings.HasPrefix(fn, "pg_try_advisory") ||
		strings.HasPrefix(fn, "lo_") || strings.HasPrefix(fn, "pg_stat_reset") ||
		strings.HasPrefix(fn, "dblink") || strings.HasSuffix(fn, "_to_xml") || strings.HasSuffix(fn, "_to_xmlschema") ||
		strings.HasSuffix(fn, "_to_xml_and_xmlschema") || strings.Contains(fn, "replication_slot") ||
		strings.HasPrefix(fn, "pg_replication_origin") || strings.HasPrefix(fn, "pg_logical_") ||
		strings.HasPrefix(fn, "binary_upgrade_") || strings.HasPrefix(fn, "brin_summarize") || strings.HasPrefix(fn, "brin_desummarize") ||
		strings.HasPrefix(fn, "gin_clean") || strings.HasPrefix(fn, "pg_create_") || strings.HasPrefix(fn, "pg_drop_") {
		return true
	}
	switch fn {
	case "nextval", "setval", "currval", "lastval", "set_config", "pg_notify", "txid_current", "txid_current_if_assigned",
		"pg_current_xact_id", "pg_current_xact_id_if_assigned", "pg_cancel_backend", "pg_terminate_backend",
		"pg_reload_conf", "pg_rotate_logfile", "pg_switch_wal", "pg_create_restore_point", "pg_backup_start",
		"pg_backup_stop", "pg_start_backup", "pg_stop_backup", "pg_export_snapshot", "pg_import_system_collations",
		"pg_promote", "pg_wal_replay_pause", "pg_wal_replay_resume", "ts_stat", "query_to_xml", "lowrite", "loread",
		"pg_sleep_for", "pg_sleep_until", "pg_listening_channels", "pg_backend_pid", "pg_my_temp_schema",
		"pg_is_other_temp_schema", "pg_log_backend_memory_contexts", "pg_file_write", "pg_read_file",
		"pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_current_wal_lsn", "pg_current_wal_insert_lsn",
		"pg_current_wal_flush_lsn", "pg_last_wal_receive_lsn", "pg_last_wal_replay_lsn", "pg_trigger_depth",
		"pg_get_serial_sequence", "setseed", "inet_client_addr", "inet_client_port", "pg_conf_load_time", "pg_postmaster_start_time":
		return true
	}
	return false
}

// builtinReadOnly are common pg_catalog functions that only compute: accepted without a catalog.
var builtinReadOnly = func() map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Fields(`
		count sum avg min max every bool_and bool_or bit_and bit_or array_agg string_agg json_agg jsonb_agg
		json_object_agg jsonb_object_agg stddev stddev_pop stddev_samp variance var_pop var_samp corr covar_pop
		covar_samp percentile_cont percentile_disc mode rank dense_rank row_number percent_rank cume_dist ntile lag
		lead first_value last_value nth_value
		now current_date current_timestamp clock_timestamp statement_timestamp transaction_timestamp timeofday
		localtimestamp localtime date_trunc date_part extract age make_date make_time make_timestamp make_timestamptz
		make_interval to_timestamp to_date to_char to_number justify_days justify_hours justify_interval isfinite
		date_bin timezone
		abs ceil ceiling floor round trunc sign sqrt cbrt exp ln log log10 power pow mod div greatest least random
		width_bucket pi degrees radians sin cos tan asin acos atan atan2 gcd lcm factorial scale
		lower upper initcap length char_length character_length octet_length bit_length substr substring position
		strpos replace translate trim btrim ltrim rtrim lpad rpad left right reverse repeat split_part concat
		concat_ws format quote_ident quote_literal quote_nullable md5 sha224 sha256 sha384 sha512 encode decode
		regexp_replace regexp_match regexp_matches regexp_split_to_array regexp_split_to_table regexp_count
		regexp_instr regexp_like starts_with ascii chr to_hex string_to_array array_to_string unnest
		array_length array_upper array_lower array_position array_positions array_remove array_replace array_append
		array_prepend array_cat array_dims array_ndims cardinality generate_series generate_subscripts
		coalesce nullif
		json_build_object jsonb_build_object json_build_array jsonb_build_array to_json to_jsonb json_extract_path
		jsonb_extract_path json_extract_path_text jsonb_extract_path_text jsonb_set jsonb_insert jsonb_pretty
		json_array_length jsonb_array_length json_each jsonb_each json_each_text jsonb_each_text
		json_array_elements jsonb_array_elements json_array_elements_text jsonb_array_elements_text json_typeof
		jsonb_typeof jsonb_strip_nulls jsonb_path_query jsonb_path_exists jsonb_path_match row_to_json
		array_to_json json_object_keys jsonb_object_keys
		num_nonnulls num_nulls pg_typeof format_type version current_database current_schema current_schemas
		current_user session_user current_setting
		uuid_generate_v4 gen_random_uuid
		text int4 int8 numeric float8 date
		pg_size_pretty pg_relation_size pg_total_relation_size pg_table_size pg_indexes_size pg_database_size
		to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd ts_headline
		setweight
	`) {
		m[f] = true
	}
	return m
}()
