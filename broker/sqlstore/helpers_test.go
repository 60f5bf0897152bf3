package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
)

// newTestDB opens a migrated SQLite database in a temporary directory,
// closed when the test ends.
func newTestDB(t *testing.T) *DB {
	t.Helper()
	return openTestDB(t, filepath.Join(t.TempDir(), "ggfleet.db"))
}

// openTestDB opens and migrates the SQLite database at path, closed when the
// test ends; for tests that reopen the same file.
func openTestDB(t *testing.T, path string) *DB {
	t.Helper()
	ctx := context.Background()
	db, err := OpenSQLite(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}
