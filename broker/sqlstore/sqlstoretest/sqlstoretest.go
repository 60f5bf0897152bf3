// Package sqlstoretest opens the broker's database for other packages'
// tests: a migrated SQLite database in a temporary directory, closed when
// the test ends. Nearly every service's tests start from one.
package sqlstoretest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ggfleet/ggfleet/broker/sqlstore"
)

// Open opens a migrated SQLite database in tb's temporary directory.
func Open(tb testing.TB) *sqlstore.DB {
	tb.Helper()
	return OpenIn(tb, tb.TempDir())
}

// OpenIn opens a migrated SQLite database ggfleet.db in dir, for tests
// that keep other files (artifacts) beside it.
func OpenIn(tb testing.TB, dir string) *sqlstore.DB {
	tb.Helper()
	ctx := context.Background()
	db, err := sqlstore.OpenSQLite(ctx, filepath.Join(dir, "ggfleet.db"), nil)
	if err != nil {
		tb.Fatalf("open database: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return db
}
