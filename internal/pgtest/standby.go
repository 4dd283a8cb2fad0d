package pgtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// StartStandby starts a physical standby of c: a base backup taken with pg_basebackup (-R, so
// it streams from c), on a free port, hot standby on. The caller must Stop it.
func (c *Cluster) StartStandby(ctx context.Context, name string) (*Cluster, error) {
	base, err := os.MkdirTemp("", dirPrefix+sanitize(name)+"-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Cluster{Host: c.Host, User: c.User, Password: c.Password, Dir: base, Major: c.Major, bin: c.bin, clientBin: c.clientBin, asUser: c.asUser}
	for file, content := range map[string]string{"bin": c.bin, "owner.pid": strconv.Itoa(os.Getpid())} {
		if err := os.WriteFile(filepath.Join(base, file), []byte(content), 0o644); err != nil {
			s.Stop()
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	if err := s.chown(base); err != nil {
		s.Stop()
		return nil, err
	}
	basebackup := filepath.Join(c.bin, "pg_basebackup")
	if _, err := os.Stat(basebackup); err != nil {
		basebackup = filepath.Join(c.clientBin, "pg_basebackup")
	}
	cmd := runAs(ctx, c.asUser, basebackup, "-D", s.dataDir(), "-h", c.Host, "-p", strconv.Itoa(c.Port), "-U", c.User, "-X", "stream", "-R", "--no-sync", "--checkpoint=fast")
	if c.Password != "" {
		cmd.Env = append(os.Environ(), "PGPASSWORD="+c.Password)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("pgtest: pg_basebackup of %s:%d: %v: %s", c.Host, c.Port, err, out)
	}
	if s.Port, err = freePort(); err != nil {
		s.Stop()
		return nil, err
	}
	// Appended after the primary's settings (and the primary_conninfo -R wrote): the last
	// setting of a name wins.
	f, err := os.OpenFile(filepath.Join(s.dataDir(), "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = fmt.Fprintf(f, "port = %d\nunix_socket_directories = '%s'\nhot_standby = on\n", s.Port, s.dataDir())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("pgtest: configure the standby: %w", err)
	}
	if err := s.start(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}
