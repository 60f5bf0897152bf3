package e2e

import (
	"database/sql"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite"
)

// countRegistry opens a stopped broker's SQLite database read-only and counts
// the things and certificates of the local provider's registry.
func countRegistry(t *testing.T, dataDir string) (things, certificates int) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dataDir, "ggfleet.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(`SELECT COUNT(*) FROM registry_things`).Scan(&things); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM registry_certificates`).Scan(&certificates); err != nil {
		t.Fatal(err)
	}
	return things, certificates
}
