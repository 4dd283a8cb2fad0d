// Package route decides where the proxy sends a statement: it classifies SQL with the real
// PostgreSQL parser (through internal/sqlparse, the one package that imports pg_query_go) and
// evaluates the read-routing rules: which sessions, by user, database, application_name, client
// address and the tables a statement reads, send what percentage of their session keys to the
// target, by a hash that is stable across processes and restarts.
//
// The classifier errs toward the source: only statements it can prove read-only are marked
// ReadOnly; anything else, including text that does not parse, is not (sqlparse.Classifier).
package route

import "github.com/pgshift/pgshift/internal/sqlparse"

// Statement is what the classifier learned about one query text (sqlparse.Statement).
type Statement = sqlparse.Statement

// ClassifierOptions tune the classifier (sqlparse.ClassifierOptions).
type ClassifierOptions = sqlparse.ClassifierOptions

// Classifier classifies statement texts, caching the result by text (sqlparse.Classifier).
type Classifier = sqlparse.Classifier

// NewClassifier returns a classifier.
func NewClassifier(opts ClassifierOptions) *Classifier { return sqlparse.NewClassifier(opts) }
