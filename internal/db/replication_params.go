package db

import (
	"context"

	"github.com/jackc/pgx/v5/pgconn"
)

// ReplicationWithParams is Replication with extra session parameters sent at startup, e.g. the
// DateStyle and TimeZone the walsender renders values in. They override the DSN's own, because
// the caller depends on the exact text format of the values the server sends.
func (e Endpoint) ReplicationWithParams(ctx context.Context, params map[string]string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(e.DSN)
	if err != nil {
		return nil, e.describe(err)
	}
	if err := applyDefaults(cfg); err != nil {
		return nil, e.describe(err)
	}
	replicationDefaults(cfg)
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, e.describe(err)
	}
	return conn, nil
}
