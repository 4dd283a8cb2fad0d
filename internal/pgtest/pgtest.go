// Package pgtest starts throwaway PostgreSQL clusters on free loopback ports for the tests and
// for `pgshift demo`: wal_level=logical, enough slots and senders, fsync off, trust or SCRAM
// authentication. It finds initdb and pg_ctl on PATH or under /usr/lib/postgresql/*/bin and,
// when the process is root, runs them as the postgres OS user (the server refuses root).
//
// A cluster is made by copying a template data directory that is initdb'ed once per machine
// and server version, so starting one takes about a second. Clusters left behind by a killed
// process are stopped and removed by the next Start.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options shape a cluster. The zero value is a trust-authenticated cluster of the newest
// installed version.
type Options struct {
	// BinDir holds initdb, pg_ctl and postgres; empty means Version's binaries, or else search
	// PATH, then /usr/lib/postgresql.
	BinDir string
	// Version, when not zero and BinDir is empty, is the server's major version (10 to 18): the
	// system's binaries of that major if installed, else fetched into CacheDir (see BinDirFor).
	Version int
	// Password, when set, is given to the postgres superuser and TCP connections require SCRAM.
	Password string
	// Settings are extra postgresql.conf lines, e.g. {"max_slot_wal_keep_size": "'16MB'"}.
	Settings map[string]string
	// Name is a label used in the data directory name and logs.
	Name string
}

// Cluster is one running throwaway server.
type Cluster struct {
	Host     string
	Port     int
	User     string
	Password string
	Dir      string // base directory: data/, server.log, owner.pid, bin
	Major    int    // the server's major version, e.g. 15
	bin      string
	// clientBin holds psql: the server's own directory, or the system's client binaries for
	// fetched servers, which ship none (psql talks to servers of other majors).
	clientBin string
	asUser    string // OS user that runs the server, "" for the current one
}

const dirPrefix = "pgshift-pgtest-"

// Start creates and starts a cluster. The caller must Stop it.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	bin := opts.BinDir
	var err error
	if bin == "" && opts.Version != 0 {
		if bin, err = BinDirFor(ctx, opts.Version); err != nil {
			return nil, err
		}
	}
	if bin, err = FindBinDir(bin); err != nil {
		return nil, err
	}
	major, err := MajorOf(ctx, bin)
	if err != nil {
		return nil, err
	}
	clientBin := bin
	if _, err := os.Stat(filepath.Join(bin, "psql")); err != nil {
		if clientBin, err = FindBinDir(""); err != nil {
			return nil, fmt.Errorf("pgtest: the server binaries in %s have no psql, and none is installed: %w", bin, err)
		}
	}
	sweepOrphans()
	asUser := ""
	if os.Geteuid() == 0 {
		asUser = "postgres"
	}
	if err := reachable(ctx, os.TempDir(), asUser); err != nil {
		return nil, err
	}
	tmpl, err := template(ctx, bin, major, asUser)
	if err != nil {
		return nil, err
	}
	base, err := os.MkdirTemp("", dirPrefix+sanitize(opts.Name)+"-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{Host: "127.0.0.1", User: "postgres", Password: opts.Password, Dir: base, Major: major, bin: bin, clientBin: clientBin, asUser: asUser}
	// bin tells sweepOrphans which pg_ctl stops this server if the process is killed.
	if err := os.WriteFile(filepath.Join(base, "bin"), []byte(bin), 0o644); err != nil {
		os.RemoveAll(base)
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(base, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(base)
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", tmpl, c.dataDir()).CombinedOutput(); err != nil {
		os.RemoveAll(base)
		return nil, fmt.Errorf("pgtest: copy template: %v: %s", err, out)
	}
	if err := c.chown(base); err != nil {
		os.RemoveAll(base)
		return nil, err
	}
	// A port can be taken between probing and binding; try a few.
	for attempt := 0; ; attempt++ {
		c.Port, err = freePort()
		if err == nil {
			if err = c.configure(opts); err == nil {
				err = c.start(ctx)
			}
		}
		if err == nil {
			break
		}
		if attempt == 4 || ctx.Err() != nil {
			c.Stop()
			return nil, err
		}
	}
	if opts.Password != "" {
		// Stored as a SCRAM verifier, which pg_hba asks for: before 14 password_encryption
		// defaults to md5, and an md5 hash cannot answer SCRAM.
		if err := c.psqlLocal(ctx, fmt.Sprintf("SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD '%s'", strings.ReplaceAll(opts.Password, "'", "''"))); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.Dir, "data") }

// LogFile is the server log, useful when a test fails.
func (c *Cluster) LogFile() string { return filepath.Join(c.Dir, "server.log") }

// DSN returns a keyword/value connection string for database dbname as the superuser.
func (c *Cluster) DSN(dbname string) string {
	s := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.Host, c.Port, c.User, dbname)
	if c.Password != "" {
		s += " password=" + c.Password
	}
	return s
}

// URL returns the same as DSN in URL form.
func (c *Cluster) URL(dbname string) string {
	auth := c.User
	if c.Password != "" {
		auth += ":" + c.Password
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", auth, c.Host, c.Port, dbname)
}

// CreateDB creates a database (UTF8, template0) and returns its DSN.
func (c *Cluster) CreateDB(ctx context.Context, name string) (string, error) {
	q := fmt.Sprintf(`CREATE DATABASE "%s" TEMPLATE template0 ENCODING 'UTF8'`, strings.ReplaceAll(name, `"`, `""`))
	if err := c.psqlLocal(ctx, q); err != nil {
		return "", err
	}
	return c.DSN(name), nil
}

// Psql runs SQL through psql over the local socket as the superuser, in database dbname.
func (c *Cluster) Psql(ctx context.Context, dbname, sql string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.clientBin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At",
		"-h", c.dataDir(), "-p", strconv.Itoa(c.Port), "-U", "postgres", "-d", dbname, "-c", sql)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("pgtest psql: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func (c *Cluster) psqlLocal(ctx context.Context, sql string) error {
	_, err := c.Psql(ctx, "postgres", sql)
	return err
}

// BinDir is the directory of the server binaries this cluster runs (pg_dump and friends live
// there too, except for fetched servers, which ship none: see ClientBinDir).
func (c *Cluster) BinDir() string { return c.bin }

// ClientBinDir is the directory of the psql this cluster is used with: BinDir when it has one,
// else the system's.
func (c *Cluster) ClientBinDir() string { return c.clientBin }

// Restart stops the server (fast mode, or immediate when crash is true) and starts it again
// on the same port.
func (c *Cluster) Restart(ctx context.Context, crash bool) error {
	mode := "fast"
	if crash {
		mode = "immediate"
	}
	if err := c.pgctl(ctx, "-m", mode, "stop"); err != nil {
		return err
	}
	return c.start(ctx)
}

// StopServer stops the server but keeps its files, to simulate an outage; Start it with Restart-like StartServer.
func (c *Cluster) StopServer(ctx context.Context) error { return c.pgctl(ctx, "-m", "fast", "stop") }

// StartServer starts a server stopped with StopServer.
func (c *Cluster) StartServer(ctx context.Context) error { return c.start(ctx) }

// Stop stops the server immediately and deletes its files. It is safe to call more than once.
func (c *Cluster) Stop() error {
	if c == nil || c.Dir == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := os.Stat(filepath.Join(c.dataDir(), "postmaster.pid")); err == nil {
		_ = c.pgctl(ctx, "-m", "immediate", "stop")
	}
	err := os.RemoveAll(c.Dir)
	c.Dir = ""
	return err
}

func (c *Cluster) configure(opts Options) error {
	settings := map[string]string{
		"listen_addresses":                "'127.0.0.1'",
		"port":                            strconv.Itoa(c.Port),
		"unix_socket_directories":         "'" + c.dataDir() + "'",
		"wal_level":                       "logical",
		"max_replication_slots":           "32",
		"max_wal_senders":                 "32",
		"max_connections":                 "200",
		"max_worker_processes":            "16",
		"max_logical_replication_workers": "8",
		"fsync":                           "off",
		"full_page_writes":                "off",
		"shared_buffers":                  "128MB",
		"max_wal_size":                    "2GB",
		"logging_collector":               "off",
		"log_min_messages":                "warning",
		"timezone":                        "'UTC'",
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, settings[k])
	}
	if err := os.WriteFile(filepath.Join(c.dataDir(), "postgresql.auto.conf"), b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("pgtest: write config: %w", err)
	}
	method := "trust"
	if opts.Password != "" {
		method = "scram-sha-256"
	}
	hba := "local all all trust\nlocal replication all trust\n" +
		"host all all 127.0.0.1/32 " + method + "\nhost replication all 127.0.0.1/32 " + method + "\n"
	if err := os.WriteFile(filepath.Join(c.dataDir(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("pgtest: write pg_hba.conf: %w", err)
	}
	return c.chown(c.dataDir())
}

func (c *Cluster) start(ctx context.Context) error {
	if err := c.pgctl(ctx, "-l", c.LogFile(), "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(c.LogFile())
		return fmt.Errorf("%w\nserver log:\n%s", err, tail(log, 2000))
	}
	return nil
}

func (c *Cluster) pgctl(ctx context.Context, args ...string) error {
	full := append([]string{"-D", c.dataDir(), "-w"}, args...)
	cmd := c.command(ctx, filepath.Join(c.bin, "pg_ctl"), full...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: pg_ctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// command runs a server binary as the server's OS user.
func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return runAs(ctx, c.asUser, name, args...)
}

func runAs(ctx context.Context, asUser, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if asUser == "" {
		cmd = exec.CommandContext(ctx, name, args...)
	} else {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", asUser, "--", name}, args...)...)
	}
	// pg_ctl start leaves the postmaster running; keep it out of our process group so a
	// Ctrl-C to the test or demo reaches us first and we stop it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Dir = os.TempDir()
	return cmd
}

func (c *Cluster) chown(path string) error {
	return chownTo(path, c.asUser)
}

// chownTo gives path and everything below it to asUser. It never touches path's parent: the
// directories pgtest creates live in shared places (the system's temp directory) whose owner
// is not pgtest's to change.
func chownTo(path, asUser string) error {
	if asUser == "" {
		return nil
	}
	u, err := user.Lookup(asUser)
	if err != nil {
		return fmt.Errorf("pgtest: the server must run as OS user %q when started by root: %w", asUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// reachable checks that asUser can enter dir, where the clusters' directories are made: pgtest
// gives the server's user only what it creates, never the shared directory above.
func reachable(ctx context.Context, dir, asUser string) error {
	if asUser == "" {
		return nil
	}
	if out, err := runAs(ctx, asUser, "test", "-x", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: the server runs as OS user %s, which cannot enter the temporary directory %s (%v %s): set TMPDIR to a directory it can reach, such as /tmp",
			asUser, dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// template returns a data directory initdb'ed once per machine and server binary directory.
// Concurrent test binaries may race to build it; each builds its own and the first rename wins.
func template(ctx context.Context, bin string, major int, asUser string) (string, error) {
	cache := filepath.Join(os.TempDir(), "pgshift-pgtest-template")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	final := filepath.Join(cache, sanitize(bin))
	if _, err := os.Stat(filepath.Join(final, "PG_VERSION")); err == nil {
		return final, nil
	}
	work, err := os.MkdirTemp(cache, "build-")
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	defer os.RemoveAll(work)
	data := filepath.Join(work, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	if err := chownTo(work, asUser); err != nil { // work is ours; data inside it must be reachable
		return "", err
	}
	args := []string{"-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"}
	if major >= 14 {
		args = append(args, "--no-instructions") // unknown to older initdb
	}
	cmd := runAs(ctx, asUser, filepath.Join(bin, "initdb"), append(args, "--locale=C.UTF-8")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		// Some systems lack C.UTF-8; plain C still gives a UTF8 database.
		cmd = runAs(ctx, asUser, filepath.Join(bin, "initdb"), append(args, "--locale=C")...)
		if out2, err2 := cmd.CombinedOutput(); err2 != nil {
			return "", fmt.Errorf("pgtest: initdb: %v: %s\n%s", err2, out, out2)
		}
	}
	if err := os.Rename(data, final); err != nil && !errors.Is(err, os.ErrExist) {
		if _, statErr := os.Stat(filepath.Join(final, "PG_VERSION")); statErr != nil {
			return "", fmt.Errorf("pgtest: install template: %w", err)
		}
	}
	return final, nil
}

// FindBinDir locates the PostgreSQL server binaries: dir if given, else the directory of
// initdb on PATH, else the newest /usr/lib/postgresql/*/bin.
func FindBinDir(dir string) (string, error) {
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err != nil {
			return "", fmt.Errorf("pgtest: no initdb in %s", dir)
		}
		return dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		// Follow links (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb) to the
		// directory that also holds psql, pg_dump and friends of the same version.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		return "", errors.New("pgtest: PostgreSQL server binaries not found (no initdb on PATH or in /usr/lib/postgresql/*/bin): run `make deps` or `apt-get install postgresql`")
	}
	sort.Slice(matches, func(i, j int) bool { return versionOf(matches[i]) > versionOf(matches[j]) })
	return filepath.Dir(matches[0]), nil
}

func versionOf(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// sweepOrphans stops and deletes clusters whose owning process has died (a killed test run).
func sweepOrphans() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		if strings.HasSuffix(d, "-template") {
			continue
		}
		pidText, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
		if err != nil || processAlive(pid) {
			continue
		}
		bin, err := FindBinDir("")
		if b, rerr := os.ReadFile(filepath.Join(d, "bin")); rerr == nil {
			bin, err = string(b), nil
		}
		if err != nil {
			return
		}
		asUser := ""
		if os.Geteuid() == 0 {
			asUser = "postgres"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_ = runAs(ctx, asUser, filepath.Join(bin, "pg_ctl"), "-D", filepath.Join(d, "data"), "-m", "immediate", "stop").Run()
		cancel()
		os.RemoveAll(d)
	}
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
