package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
)

// The SQLite statement cache runs each query text with its kept statement
// and new arguments, gives a query a statement of its own while the kept
// one's rows are open (the same text nested in a transaction), and keeps
// working when it starts over with rows still open.
func TestStatementCache(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "c.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.sql.ExecContext(ctx, `CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for i := range 50 { // one text, new arguments each time
		if _, err := db.sql.ExecContext(ctx, `INSERT INTO kv (k, v) VALUES (?, ?)`, i, fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	var v string
	if err := db.read.QueryRowContext(ctx, `SELECT v FROM kv WHERE k = ?`, 7).Scan(&v); err != nil || v != "v7" {
		t.Fatalf("read k=7: %q, %v", v, err)
	}
	if err := db.read.QueryRowContext(ctx, `SELECT v FROM kv WHERE k = ?`, 8).Scan(&v); err != nil || v != "v8" {
		t.Fatalf("read k=8 with the kept statement: %q, %v", v, err)
	}

	err = db.InTx(ctx, func(tx *sql.Tx) error {
		const q = `SELECT k FROM kv WHERE k < ? ORDER BY k`
		outer, err := tx.QueryContext(ctx, q, 3)
		if err != nil {
			return err
		}
		defer outer.Close()
		var got []string
		for outer.Next() {
			var k int
			if err := outer.Scan(&k); err != nil {
				return err
			}
			// The same text while its kept statement's rows are open.
			inner, err := tx.QueryContext(ctx, q, k+1)
			if err != nil {
				return err
			}
			n := 0
			for inner.Next() {
				n++
			}
			if err := inner.Close(); err != nil {
				return err
			}
			// More texts than the cache keeps: it starts over, the open
			// statement is closed once its rows are.
			for j := range stmtCacheSize + 1 {
				if _, err := tx.ExecContext(ctx, fmt.Sprintf(`UPDATE kv SET v = v WHERE k = %d`, j)); err != nil {
					return err
				}
			}
			got = append(got, fmt.Sprintf("%d:%d", k, n))
		}
		if err := outer.Err(); err != nil {
			return err
		}
		if fmt.Sprint(got) != "[0:1 1:2 2:3]" {
			return fmt.Errorf("nested reads = %v, want [0:1 1:2 2:3]", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM kv WHERE k < ?`, 3).Scan(&n); err != nil || n != 3 {
		t.Fatalf("the first query text after the cache started over: %d, %v", n, err)
	}
}
