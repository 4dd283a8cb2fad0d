package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshift/pgshift/internal/proxy/route"
)

// serveAdmin runs the admin console: database "pgshift" on the proxy's port, simple query
// protocol, PgBouncer-style commands. Admin sessions are never paused.
func (p *Proxy) serveAdmin(ctx context.Context, c net.Conn, rd *msgReader, user string) {
	rd.valid = &frontendTypes
	out := encode(nil, &pgproto3.AuthenticationOk{})
	for _, kv := range [][2]string{{"server_version", "15.0 (pgshift proxy console)"}, {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"},
		{"DateStyle", "ISO, MDY"}, {"integer_datetimes", "on"}, {"standard_conforming_strings", "on"}, {"application_name", ""}} {
		out = encode(out, &pgproto3.ParameterStatus{Name: kv[0], Value: kv[1]})
	}
	out = encode(out, &pgproto3.BackendKeyData{ProcessID: 0, SecretKey: []byte{0, 0, 0, 0}})
	out = append(out, readyForQuery('I')...)
	if err := writeAll(c, out); err != nil {
		return
	}
	p.log.Info("admin console session", "user", user, "addr", c.RemoteAddr().String())
	skipToSync := false
	for {
		msg, err := rd.next()
		if err != nil {
			if errors.Is(err, errProtocol) {
				_ = writeAll(c, encode(nil, errorMsg("FATAL", "08P01", "pgshift: protocol violation")))
			}
			return
		}
		switch msg[0] {
		case 'X':
			return
		case 'Q':
			q, _, _ := cstring(body(msg))
			out := p.adminQuery(ctx, q, user)
			if err := writeAll(c, append(out, readyForQuery('I')...)); err != nil {
				return
			}
		case 'S':
			if skipToSync {
				skipToSync = false
				if err := writeAll(c, readyForQuery('I')); err != nil {
					return
				}
			}
		default:
			if !skipToSync {
				skipToSync = true
				if err := writeAll(c, encode(nil, errorMsg("ERROR", "0A000", "the pgshift console speaks the simple query protocol only"))); err != nil {
					return
				}
			}
		}
	}
}

// adminQuery runs one console command and returns the response messages (without
// ReadyForQuery).
func (p *Proxy) adminQuery(ctx context.Context, q, user string) []byte {
	words := strings.Fields(strings.TrimRight(strings.TrimSpace(q), "; \t\n"))
	if len(words) == 0 {
		return encode(nil, &pgproto3.EmptyQueryResponse{})
	}
	cmd := strings.ToUpper(words[0])
	arg := ""
	if len(words) > 1 {
		arg = strings.ToLower(words[1])
	}
	fail := func(err error) []byte { return encode(nil, errorMsg("ERROR", "55000", err.Error())) }
	done := func(tag, notice string) []byte {
		var out []byte
		if notice != "" {
			out = encode(out, &pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: notice})
		}
		return encode(out, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
	}
	if cmd != "SHOW" {
		p.log.Info("admin command", "user", user, "command", strings.Join(words, " "))
	}
	switch cmd {
	case "SHOW":
		cols, rows, err := p.show(arg)
		if err != nil {
			return fail(err)
		}
		return table(cols, rows)
	case "PAUSE":
		timeout := time.Duration(0)
		if arg != "" {
			d, err := parseTimeout(arg)
			if err != nil {
				return fail(err)
			}
			timeout = d
		}
		took, err := p.Pause(ctx, timeout)
		if err != nil {
			return fail(err)
		}
		return done("PAUSE", fmt.Sprintf("%d sessions paused in %s", len(p.sessionList()), took.Round(time.Microsecond)))
	case "RESUME":
		p.Resume()
		return done("RESUME", "")
	case "SWITCH":
		to, err := ParseRole(arg)
		if err != nil {
			return fail(fmt.Errorf("SWITCH %w", err))
		}
		wasPaused := p.Paused()
		if err := p.SwitchNow(ctx, to, 0); err != nil {
			return fail(err)
		}
		if wasPaused {
			return done("SWITCH", fmt.Sprintf("sessions on the %s server; still paused", to))
		}
		return done("SWITCH", fmt.Sprintf("sessions on the %s server; they were held for %s", to, p.LastPauseDuration().Round(time.Microsecond)))
	case "MODE":
		m, err := ParseMode(arg)
		if err != nil || arg == "" {
			return fail(errors.New("MODE source|split|target"))
		}
		if err := p.SetMode(ctx, m); err != nil {
			return fail(err)
		}
		return done("MODE", "mode is "+m.String())
	case "RELOAD":
		if err := p.Reload(ctx); err != nil {
			return fail(err)
		}
		return done("RELOAD", "")
	}
	return fail(fmt.Errorf("unknown command %q; the console knows SHOW CLIENTS|SERVERS|ROUTES|REPLICAS|STATS, PAUSE [timeout], RESUME, SWITCH source|target, MODE source|split|target, RELOAD", words[0]))
}

// parseTimeout reads a PAUSE timeout: a Go duration ("500ms", "10s") or whole seconds.
func parseTimeout(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("PAUSE timeout %q: want seconds or a duration such as 500ms", s)
	}
	return d, nil
}

// table renders a text result set.
func table(cols []string, rows [][]string) []byte {
	rd := &pgproto3.RowDescription{}
	for _, c := range cols {
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte(c), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1})
	}
	out := encode(nil, rd)
	for _, r := range rows {
		dr := &pgproto3.DataRow{}
		for _, v := range r {
			dr.Values = append(dr.Values, []byte(v))
		}
		out = encode(out, dr)
	}
	return encode(out, &pgproto3.CommandComplete{CommandTag: []byte(fmt.Sprintf("SHOW %d", len(rows)))})
}

// Show answers SHOW CLIENTS, SERVERS or ROUTES ("clients", "servers", "routes") as column
// names and rows, for the agent's API.
func (p *Proxy) Show(what string) ([]string, [][]string, error) { return p.show(what) }

// show returns the rows of SHOW what.
func (p *Proxy) show(what string) ([]string, [][]string, error) {
	switch what {
	case "clients":
		cols := []string{"id", "user", "database", "application_name", "address", "tls", "state", "server", "connected_at", "requests"}
		var rows [][]string
		for _, s := range p.sessionList() {
			s.mu.Lock()
			rows = append(rows, []string{strconv.FormatUint(s.id, 10), s.user, s.database, s.appName, s.addr.String(), strconv.FormatBool(s.tls),
				s.stateLocked(), s.primary.String(), s.started.UTC().Format(time.RFC3339), strconv.FormatUint(s.requests.Load(), 10)})
			s.mu.Unlock()
		}
		return cols, rows, nil
	case "servers":
		cols := []string{"client", "server", "pid", "read_only", "state", "tls", "connected_at"}
		var rows [][]string
		for _, s := range p.sessionList() {
			s.mu.Lock()
			for _, c := range s.conns {
				if c == nil {
					continue
				}
				st := "idle"
				switch {
				case c.pending > 0:
					st = "active"
				case c.txStatus != 'I':
					st = "idle in transaction"
				}
				server := c.role.String()
				if c.readEP != nil && c.readEP.replica() {
					server = "target " + c.readEP.name
				}
				rows = append(rows, []string{strconv.FormatUint(s.id, 10), server, strconv.FormatUint(uint64(c.pid), 10),
					strconv.FormatBool(c.readOnly), st, strconv.FormatBool(c.dialed.tls != nil), c.connectedAt.UTC().Format(time.RFC3339)})
			}
			s.mu.Unlock()
		}
		return cols, rows, nil
	case "routes":
		cols := []string{"rule", "users", "databases", "applications", "addresses", "tables", "percent", "key", "to_target", "to_source"}
		var rows [][]string
		p.mu.Lock()
		rules := p.rules.List()
		stats := *p.routeStats.Load()
		p.mu.Unlock()
		for _, r := range rules {
			key := string(r.Key)
			if key == "" {
				key = string(route.KeyUser)
			}
			if r.Key == route.KeyParam {
				key += ":" + r.KeyParam
			}
			var addrs []string
			for _, a := range r.Addresses {
				addrs = append(addrs, a.String())
			}
			var tt, ts uint64
			if st := stats[r.Name]; st != nil {
				tt, ts = st.target.Load(), st.source.Load()
			}
			rows = append(rows, []string{r.Name, strings.Join(r.Users, ","), strings.Join(r.Databases, ","), strings.Join(r.Applications, ","),
				strings.Join(addrs, ","), strings.Join(r.Tables, ","), strconv.FormatFloat(r.Percent, 'f', -1, 64), key,
				strconv.FormatUint(tt, 10), strconv.FormatUint(ts, 10)})
		}
		return cols, rows, nil
	case "replicas":
		cols, rows := p.replicaRows()
		return cols, rows, nil
	case "stats":
		st := p.Stats()
		rows := [][]string{
			{"mode", st.Mode}, {"paused", strconv.FormatBool(st.Paused)}, {"clients", strconv.Itoa(st.Clients)},
			{"server_connections_source", strconv.Itoa(st.ServerConns[0])}, {"server_connections_target", strconv.Itoa(st.ServerConns[1])},
			{"requests", strconv.FormatUint(st.Requests, 10)},
		}
		if st.LagSeconds >= 0 {
			rows = append(rows, []string{"lag_seconds", strconv.FormatFloat(st.LagSeconds, 'f', 3, 64)})
		} else {
			rows = append(rows, []string{"lag_seconds", "unknown"})
		}
		return []string{"name", "value"}, rows, nil
	}
	return nil, nil, fmt.Errorf("SHOW %q: want CLIENTS, SERVERS, ROUTES, REPLICAS or STATS", what)
}

// Stats is a summary of the proxy's state.
type Stats struct {
	Mode        string  `json:"mode"`
	Paused      bool    `json:"paused"`
	Clients     int     `json:"clients"`
	ServerConns [2]int  `json:"server_connections"` // source, target
	Requests    uint64  `json:"requests"`
	LagSeconds  float64 `json:"lag_seconds"` // -1 when unknown
}

// Stats returns the summary.
func (p *Proxy) Stats() Stats {
	st := Stats{Mode: p.Mode().String(), Paused: p.Paused(), LagSeconds: -1}
	for _, s := range p.sessionList() {
		st.Clients++
		st.Requests += s.requests.Load()
		s.mu.Lock()
		for r, c := range s.conns {
			if c != nil {
				st.ServerConns[r]++
			}
		}
		s.mu.Unlock()
	}
	if lag, ok := p.progress.lag(); ok {
		st.LagSeconds = lag.Seconds()
	}
	return st
}

// Reload re-reads the auth file and the servers' catalogs (type OIDs, read-only functions),
// and, when the proxy was given a config source, the rules, admin users and allowed functions.
func (p *Proxy) Reload(ctx context.Context) error {
	af, err := p.loadAuth()
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if p.reload != nil {
		cfg, err := p.reload()
		if err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		rules, err := route.NewRules(cfg.Rules)
		if err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		p.mu.Lock()
		p.rules = rules
		stats := map[string]*routeStat{}
		for k, v := range *p.routeStats.Load() {
			stats[k] = v
		}
		for _, r := range cfg.Rules {
			if stats[r.Name] == nil {
				stats[r.Name] = &routeStat{}
			}
		}
		p.routeStats.Store(&stats)
		if len(cfg.AdminUsers) > 0 {
			p.cfg.AdminUsers = cfg.AdminUsers
		}
		p.cfg.AllowFunctions = cfg.AllowFunctions
		p.mu.Unlock()
		for _, s := range p.sessionList() {
			s.setRoutes(rules.ForSession(s.routeSession()))
		}
	}
	p.mu.Lock()
	p.auth = af
	p.paramCache = map[string]map[string]string{}
	p.mu.Unlock()
	if p.eps[Target] != nil {
		if err := p.loadCatalog(ctx); err != nil {
			return fmt.Errorf("reload: %w", err)
		}
	}
	p.log.Info("proxy configuration reloaded", "users", af.Users())
	return nil
}

// Handler is the HTTP form of the console for the agent's --http API: GET /proxy/stats,
// /proxy/clients, /proxy/servers, /proxy/routes; POST /proxy/pause?timeout=10s,
// /proxy/resume, /proxy/switch?to=target, /proxy/mode?mode=split, /proxy/reload.
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any, err error) {
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /proxy/stats", func(w http.ResponseWriter, r *http.Request) { reply(w, p.Stats(), nil) })
	for _, what := range []string{"clients", "servers", "routes"} {
		mux.HandleFunc("GET /proxy/"+what, func(w http.ResponseWriter, r *http.Request) {
			cols, rows, err := p.show(what)
			var out []map[string]string
			for _, row := range rows {
				m := map[string]string{}
				for i, c := range cols {
					m[c] = row[i]
				}
				out = append(out, m)
			}
			reply(w, out, err)
		})
	}
	mux.HandleFunc("POST /proxy/pause", func(w http.ResponseWriter, r *http.Request) {
		var timeout time.Duration
		if t := r.URL.Query().Get("timeout"); t != "" {
			var err error
			if timeout, err = parseTimeout(t); err != nil {
				reply(w, nil, err)
				return
			}
		}
		took, err := p.Pause(r.Context(), timeout)
		reply(w, map[string]any{"paused": err == nil, "took_seconds": took.Seconds()}, err)
	})
	mux.HandleFunc("POST /proxy/resume", func(w http.ResponseWriter, r *http.Request) {
		p.Resume()
		reply(w, map[string]bool{"resumed": true}, nil)
	})
	mux.HandleFunc("POST /proxy/switch", func(w http.ResponseWriter, r *http.Request) {
		to, err := ParseRole(r.URL.Query().Get("to"))
		if err == nil {
			err = p.SwitchNow(r.Context(), to, 0)
		}
		reply(w, map[string]string{"mode": p.Mode().String()}, err)
	})
	mux.HandleFunc("POST /proxy/mode", func(w http.ResponseWriter, r *http.Request) {
		m, err := ParseMode(r.URL.Query().Get("mode"))
		if err == nil {
			err = p.SetMode(r.Context(), m)
		}
		reply(w, map[string]string{"mode": p.Mode().String()}, err)
	})
	mux.HandleFunc("POST /proxy/reload", func(w http.ResponseWriter, r *http.Request) {
		err := p.Reload(r.Context())
		reply(w, map[string]bool{"reloaded": err == nil}, err)
	})
	return mux
}
