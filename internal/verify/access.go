package verify

// Who may do what: owners, privileges, default privileges, row-level security and policies,
// replica identities, the database's and its roles' settings, the roles themselves, and large
// objects. A missing grant on the target is a difference verify reports, not a permission
// error the application meets after cutover.

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
)

// accessObjectsSQL lists, like schemaObjectsSQL (kind, name, schema, table, definition),
// what decides who may do what. Privileges are the sorted aclitems, the object's default
// privileges when none were granted (acldefault), so "never granted" and "granted back" compare
// equal; names are role names, the same on both sides. Roles are those the database
// references (owners, grantees, policy roles, settings), pgshift's own schema left out.
func accessObjectsSQL(ver catalog.Version) string {
	return `
WITH ns AS (
  SELECT oid, nspname, nspowner, nspacl FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
    AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp\_%'
),
rel AS (
  SELECT c.oid, c.relkind, c.relowner, c.relacl, c.relreplident, c.relrowsecurity, c.relforcerowsecurity, n.nspname, c.relname,
         quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS qname
  FROM pg_class c JOIN ns n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
),
acl(kind, name, nspname, relname, owner, items) AS (
  SELECT CASE relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' ELSE 'table' END,
         qname, nspname, relname, relowner, coalesce(relacl, acldefault((CASE relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char", relowner))
  FROM rel
  UNION ALL
  SELECT 'schema', quote_ident(nspname), '', '', nspowner, coalesce(nspacl, acldefault('n', nspowner)) FROM ns
  UNION ALL
  SELECT CASE ` + ver.ProKindSQL("p") + ` WHEN 'p' THEN 'procedure' ELSE 'function' END,
         quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
         '', '', p.proowner, coalesce(p.proacl, acldefault('f', p.proowner))
  FROM pg_proc p JOIN ns n ON n.oid = p.pronamespace
  WHERE ` + implicitFunction + ` AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
  UNION ALL
  SELECT 'type', quote_ident(n.nspname) || '.' || quote_ident(t.typname), '', '', t.typowner, coalesce(t.typacl, acldefault('T', t.typowner))
  FROM pg_type t JOIN ns n ON n.oid = t.typnamespace
  WHERE t.typcategory <> 'A' -- arrays come with their element type
    AND t.typtype <> 'm' -- multiranges with their range type: pg_dump writes nothing of their own
    AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c') -- row types with their relation
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
  UNION ALL
  SELECT 'database', 'database', '', '', d.datdba, coalesce(d.datacl, acldefault('d', d.datdba))
  FROM pg_database d WHERE d.datname = current_database()
)
SELECT 'owner', kind || ' ' || name, nspname, relname, pg_get_userbyid(owner) FROM acl
UNION ALL
SELECT 'privileges', kind || ' ' || name, nspname, relname, array_to_string(ARRAY(SELECT a::text FROM unnest(items) a ORDER BY 1), ',') FROM acl
UNION ALL
SELECT 'privileges', 'column ' || r.qname || '.' || quote_ident(a.attname), r.nspname, r.relname,
       array_to_string(ARRAY(SELECT x::text FROM unnest(a.attacl) x ORDER BY 1), ',')
FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
UNION ALL
SELECT 'default privileges', pg_get_userbyid(d.defaclrole) || ' in ' || coalesce(quote_ident(n.nspname), 'every schema') || ' on ' ||
         CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE d.defaclobjtype::text END,
       '', '', array_to_string(ARRAY(SELECT x::text FROM unnest(d.defaclacl) x ORDER BY 1), ',')
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
WHERE n.oid IS NULL OR n.nspname <> 'pgshift'
UNION ALL
SELECT 'row security', r.qname, r.nspname, r.relname,
       CASE WHEN r.relrowsecurity THEN 'enabled' ELSE 'disabled' END || CASE WHEN r.relforcerowsecurity THEN ', forced' ELSE '' END
FROM rel r WHERE r.relkind IN ('r', 'p') AND (r.relrowsecurity OR r.relforcerowsecurity)
UNION ALL
SELECT 'policy', r.qname || '.' || quote_ident(p.polname), r.nspname, r.relname,
       CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END
       || ' FOR ' || CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END
       || ' TO ' || coalesce((SELECT string_agg(CASE WHEN x = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x) END, ', ' ORDER BY 1) FROM unnest(p.polroles) x), '')
       || coalesce(' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')', '')
       || coalesce(' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')', '')
FROM pg_policy p JOIN rel r ON r.oid = p.polrelid
UNION ALL
SELECT 'replica identity', r.qname, r.nspname, r.relname,
       CASE r.relreplident WHEN 'f' THEN 'full' WHEN 'n' THEN 'nothing'
            WHEN 'i' THEN 'index ' || coalesce((SELECT quote_ident(ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                                                WHERE i.indrelid = r.oid AND i.indisreplident), '(none)')
            ELSE 'default' END
FROM rel r WHERE r.relkind IN ('r', 'p') AND r.relreplident <> 'd'
UNION ALL
SELECT 'setting', CASE WHEN s.setrole = 0 THEN 'database' ELSE 'role ' || pg_get_userbyid(s.setrole) || ' in database' END, '', '',
       array_to_string(ARRAY(SELECT x FROM unnest(s.setconfig) x ORDER BY 1), ', ')
FROM pg_db_role_setting s WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())`
}

// rolesSQL describes the roles the database references directly (owners, grantees, policy
// roles, settings), with their attributes, cluster-wide settings and memberships; pgshift's
// own schema and publications are left out (as schema.ReferencedRoles does).
const rolesSQL = `
WITH db AS (SELECT oid, datdba FROM pg_database WHERE datname = current_database()),
own_ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'pgshift'),
direct(oid) AS (
  SELECT d.refobjid FROM pg_shdepend d CROSS JOIN db
  WHERE d.refclassid = 'pg_authid'::regclass
    AND (d.dbid = db.oid OR (d.dbid = 0 AND d.classid = 'pg_database'::regclass AND d.objid = db.oid))
    AND d.classid NOT IN ('pg_publication'::regclass, 'pg_subscription'::regclass)
    AND NOT (d.classid = 'pg_namespace'::regclass AND d.objid IN (SELECT oid FROM own_ns))
    AND NOT (d.classid = 'pg_class'::regclass AND d.objid IN (SELECT c.oid FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM own_ns)))
    AND NOT (d.classid = 'pg_type'::regclass AND d.objid IN (SELECT t.oid FROM pg_type t WHERE t.typnamespace IN (SELECT oid FROM own_ns)))
  UNION SELECT s.setrole FROM pg_db_role_setting s CROSS JOIN db WHERE s.setdatabase = db.oid AND s.setrole <> 0
)
SELECT 'role', r.rolname, '', '',
       concat_ws(' ', CASE WHEN r.rolsuper THEN 'SUPERUSER' END, CASE WHEN NOT r.rolinherit THEN 'NOINHERIT' END,
                 CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END, CASE WHEN r.rolcreatedb THEN 'CREATEDB' END,
                 CASE WHEN r.rolcanlogin THEN 'LOGIN' END, CASE WHEN r.rolreplication THEN 'REPLICATION' END,
                 CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END, CASE WHEN r.rolconnlimit <> -1 THEN 'CONNECTION LIMIT ' || r.rolconnlimit END,
                 CASE WHEN r.rolvaliduntil IS NOT NULL THEN 'VALID UNTIL ' || r.rolvaliduntil END)
       || coalesce('; member of ' || (SELECT string_agg(g.rolname || CASE WHEN m.admin_option THEN ' WITH ADMIN' ELSE '' END, ', ' ORDER BY g.rolname)
                                     FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), '')
       || coalesce('; settings ' || (SELECT array_to_string(ARRAY(SELECT x FROM unnest(s.setconfig) x ORDER BY 1), ', ')
                                    FROM pg_db_role_setting s WHERE s.setrole = r.oid AND s.setdatabase = 0), '')
FROM pg_roles r WHERE r.oid IN (SELECT oid FROM direct) AND r.oid <> 10`

// accessObjects adds to out, from one side's transaction, what accessObjectsSQL and rolesSQL
// list and the large objects (metadata, size and a hash of their contents), keeping what the
// filter allows like schemaObjects does. Roles on the target that only the target references
// are not listed: a role is compared by the source's references.
func (v *verifier) accessObjects(ctx context.Context, tx pgx.Tx, ver catalog.Version, out map[string]schemaObject) error {
	for _, sql := range []string{accessObjectsSQL(ver), rolesSQL} {
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			return err
		}
		for rows.Next() {
			var o schemaObject
			var schema, table string
			if err := rows.Scan(&o.kind, &o.name, &schema, &table, &o.def); err != nil {
				rows.Close()
				return err
			}
			if table != "" && !v.opts.Filter.Match(schema, table) || table == "" && len(v.opts.Filter.Include) > 0 {
				continue
			}
			out[o.kind+" "+o.name] = o
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	if len(v.opts.Filter.Include) > 0 {
		return nil
	}
	los, err := catalog.LargeObjects(ctx, tx)
	if err != nil {
		return err
	}
	oids := make([]uint32, len(los))
	for i, lo := range los {
		oids[i] = lo.OID
	}
	contents, err := catalog.LargeObjectContents(ctx, tx, oids)
	if err != nil {
		return err
	}
	for _, lo := range los {
		c := contents[lo.OID]
		name := fmt.Sprint(lo.OID)
		out["large object "+name] = schemaObject{kind: "large object", name: name,
			def: fmt.Sprintf("owner %s; privileges %s; %d bytes, md5 of pieces %s%s", lo.Owner, lo.ACL, c.Size, c.Hash, commentSuffix(lo.Comment))}
	}
	return nil
}

func commentSuffix(c string) string {
	if c == "" {
		return ""
	}
	return "; comment " + strings.ReplaceAll(c, "\n", " ")
}
