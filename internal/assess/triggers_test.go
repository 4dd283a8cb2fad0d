package assess

import (
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestReplicaModeTriggerRule: each trigger or rule that fires in replica mode is one warning
// naming it, its table and what pgshift does about it.
func TestReplicaModeTriggerRule(t *testing.T) {
	f := readyFacts()
	f.ReplicaModeTriggers = []ReplicaModeTrigger{
		{Kind: "trigger", Table: "public.orders", Name: "audit", State: "ALWAYS"},
		{Kind: "rule", Table: `"Sales".orders`, Name: "Log It", State: "REPLICA"},
	}
	var got []Finding
	for _, fd := range Evaluate(f) {
		if fd.Code == CodeReplicaModeTrigger {
			got = append(got, fd)
		}
	}
	if len(got) != 2 {
		t.Fatalf("findings %+v", got)
	}
	for _, fd := range got {
		if fd.Severity != Warning || fd.Fix == "" {
			t.Errorf("finding %+v: want a warning with a fix", fd)
		}
	}
	if got[0].Object != `rule "Log It" on "Sales".orders` && got[1].Object != `rule "Log It" on "Sales".orders` {
		t.Errorf("objects %q, %q", got[0].Object, got[1].Object)
	}
	var audit Finding
	for _, fd := range got {
		if strings.HasPrefix(fd.Object, "trigger audit") {
			audit = fd
		}
	}
	if !strings.HasPrefix(audit.Message, "trigger audit on public.orders is ENABLE ALWAYS: pgshift keeps it disabled on the target until cutover") {
		t.Errorf("message %q", audit.Message)
	}
}

// TestReplicaModeTriggerFindings reads the triggers from a real server: ENABLE ALWAYS and
// REPLICA triggers and rules are found, ordinary and disabled ones are not, and a partition's
// clone is reported only when its state differs from its parent's.
func TestReplicaModeTriggerFindings(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	sc := scenario{name: "replica mode triggers", source: `
		CREATE TABLE public.items (id int PRIMARY KEY);
		CREATE FUNCTION public.f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
		CREATE TRIGGER plain AFTER INSERT ON public.items FOR EACH ROW EXECUTE FUNCTION public.f();
		CREATE TRIGGER off AFTER INSERT ON public.items FOR EACH ROW EXECUTE FUNCTION public.f();
		ALTER TABLE public.items DISABLE TRIGGER off;
		CREATE TRIGGER audit AFTER INSERT ON public.items FOR EACH ROW EXECUTE FUNCTION public.f();
		ALTER TABLE public.items ENABLE ALWAYS TRIGGER audit;
		CREATE TRIGGER "Only Replica" AFTER INSERT ON public.items FOR EACH ROW EXECUTE FUNCTION public.f();
		ALTER TABLE public.items ENABLE REPLICA TRIGGER "Only Replica";
		CREATE RULE notify_it AS ON UPDATE TO public.items DO ALSO NOTIFY items;
		ALTER TABLE public.items ENABLE ALWAYS RULE notify_it;
		CREATE TABLE public.parts (id int PRIMARY KEY) PARTITION BY RANGE (id);
		CREATE TABLE public.parts_a PARTITION OF public.parts FOR VALUES FROM (0) TO (10);
		CREATE TABLE public.parts_b PARTITION OF public.parts FOR VALUES FROM (10) TO (20);
		CREATE TRIGGER ptrg AFTER INSERT ON public.parts FOR EACH ROW EXECUTE FUNCTION public.f();
		ALTER TABLE public.parts ENABLE ALWAYS TRIGGER ptrg;
		ALTER TABLE public.parts_b ENABLE REPLICA TRIGGER ptrg;`,
		want: []want{
			{CodeReplicaModeTrigger, Warning, "trigger audit on public.items"},
			{CodeReplicaModeTrigger, Warning, `trigger "Only Replica" on public.items`},
			{CodeReplicaModeTrigger, Warning, "rule notify_it on public.items"},
			{CodeReplicaModeTrigger, Warning, "trigger ptrg on public.parts"},
			{CodeReplicaModeTrigger, Warning, "trigger ptrg on public.parts_b"},
		}}
	t.Run(sc.name, func(t *testing.T) { check(t, run(t, src, dst, sc), sc) })
}
