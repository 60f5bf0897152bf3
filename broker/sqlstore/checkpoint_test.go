package sqlstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckpointer checks that committed pages reach the database file
// without the writer's own checkpoint (whose threshold is far above what
// the test writes), and that Close stops the checkpointer.
func TestCheckpointer(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ggfleet.db")
	d, err := OpenSQLite(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			d.Close()
		}
	})

	var pages int
	if err := d.sql.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages != walBackstopPages {
		t.Fatalf("writer's wal_autocheckpoint = %d, want the backstop %d", pages, walBackstopPages)
	}

	if _, err := d.sql.ExecContext(ctx, `CREATE TABLE scratch (v TEXT)`); err != nil {
		t.Fatal(err)
	}
	before := fileSize(t, path)
	const rows, size = 512, 4096 // 2 MiB: about 520 pages, under SQLite's default 1,000 too
	blob := strings.Repeat("x", size)
	for range rows {
		if _, err := d.sql.ExecContext(ctx, `INSERT INTO scratch (v) VALUES (?)`, blob); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for fileSize(t, path) < before+rows*size {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes (was %d) 30 s after writing %d bytes: nothing checkpointed", fileSize(t, path), before, rows*size)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	select {
	case <-d.ckpt.done:
	default:
		t.Fatal("the checkpointer still runs after Close")
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
