package db

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/pgtest"
)

func TestEndpointStringHidesPassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://app:topsecret@db.example:6432/prod",
		"host=db.example port=6432 user=app password=topsecret dbname=prod",
	} {
		s := Endpoint{Role: Source, DSN: dsn}.String()
		if strings.Contains(s, "topsecret") || !strings.Contains(s, "db.example:6432/prod") {
			t.Errorf("String(%q) = %q", dsn, s)
		}
	}
}

func TestClassifySQLState(t *testing.T) {
	cases := map[string]string{
		"28P01": "password",
		"3D000": "create the database",
		"42501": "grant",
		"53300": "max_connections",
	}
	for code, want := range cases {
		_, fix := Classify(fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code, Message: "m"}))
		if !strings.Contains(fix, want) {
			t.Errorf("%s: fix %q lacks %q", code, fix, want)
		}
	}
}

func TestMalformedDSN(t *testing.T) {
	e := Endpoint{Role: Target, DSN: "host=x password=hunter2 port=notaport"}
	_, err := e.Connect(context.Background())
	if err == nil {
		t.Fatal("malformed DSN accepted")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("password leaked: %v", err)
	}
	if !strings.Contains(err.Error(), "target") || !strings.Contains(err.Error(), "invalid connection string") {
		t.Errorf("error does not say what is wrong: %v", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	e := Endpoint{Role: Source, DSN: fmt.Sprintf("postgres://u:pw-refused@127.0.0.1:%d/db?connect_timeout=3", port)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := e.Connect(ctx)
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	var de *Error
	if !errors.As(err, &de) || de.Problem != "connection refused" {
		t.Errorf("want connection refused, got %v", err)
	}
	if strings.Contains(err.Error(), "pw-refused") {
		t.Errorf("password leaked: %v", err)
	}
}

func TestWrongPasswordAndMissingDatabase(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{Password: "right-pass"})
	ctx := context.Background()
	bad := Endpoint{Role: Source, DSN: strings.Replace(c.URL("postgres"), "right-pass", "wrong-pass-123", 1)}
	_, err := bad.Connect(ctx)
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	if strings.Contains(err.Error(), "wrong-pass-123") || !strings.Contains(err.Error(), "password") {
		t.Errorf("wrong password error: %v", err)
	}
	missing := Endpoint{Role: Target, DSN: c.DSN("nosuchdb")}
	_, err = missing.Connect(ctx)
	if err == nil || !strings.Contains(err.Error(), "create the database") {
		t.Errorf("missing database error: %v", err)
	}
	if strings.Contains(err.Error(), "right-pass") {
		t.Errorf("password leaked: %v", err)
	}
	good := Endpoint{Role: Source, DSN: c.DSN("postgres")}
	pool, err := good.Pool(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	rc, err := good.Replication(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close(ctx)
}
