// Package pgtypes holds the small typed values every other package speaks in:
// WAL positions (LSN), quoted table identifiers (TableID) and migration phases.
// It does no I/O so that any package, including pure unit tests, can use it.
package pgtypes

import (
	"database/sql/driver"
	"fmt"
	"strconv"
	"strings"
)

// LSN is a PostgreSQL write-ahead-log position. Zero means "none".
type LSN uint64

// ParseLSN parses the textual form "XXXXXXXX/XXXXXXXX" that PostgreSQL prints.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return 0, fmt.Errorf("parse LSN %q: want the form X/X", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// String renders the LSN the way PostgreSQL does, so it can be pasted into SQL as a pg_lsn.
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l))
}

// Scan implements sql.Scanner for pg_lsn values read as text (and NULL as zero).
func (l *LSN) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*l = 0
		return nil
	case string:
		p, err := ParseLSN(v)
		*l = p
		return err
	case []byte:
		p, err := ParseLSN(string(v))
		*l = p
		return err
	case int64:
		*l = LSN(v)
		return nil
	default:
		return fmt.Errorf("scan LSN: unsupported type %T", src)
	}
}

// Value implements driver.Valuer: the text form, which PostgreSQL casts to pg_lsn.
func (l LSN) Value() (driver.Value, error) {
	return l.String(), nil
}
