package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// TestAtomically checks the transaction Atomically carries in its context:
// store calls made with it see its writes and commit together, a failing
// function commits nothing, a failing nested call (savepoint) undoes only
// its own writes, and a failed statement inside one (on PostgreSQL it
// aborts the transaction) does not poison the rest.
func TestAtomically(t *testing.T) {
	exists := func(t *testing.T, ctx context.Context, db *DB, name string) bool {
		t.Helper()
		_, err := db.Registry().GetThing(ctx, name)
		if err != nil && !errkind.Is(err, errkind.NotFound) {
			t.Fatalf("GetThing %s: %v", name, err)
		}
		return err == nil
	}
	boom := errors.New("boom")

	tests := []struct {
		name    string
		fn      func(t *testing.T, ctx context.Context, db *DB) error
		wantErr bool
		want    map[string]bool // thing → exists after
	}{
		{
			name: "commits every write together",
			fn: func(t *testing.T, ctx context.Context, db *DB) error {
				for _, n := range []string{"t1", "t2"} {
					if err := db.Registry().CreateThing(ctx, testThing(n)); err != nil {
						return err
					}
				}
				if !exists(t, ctx, db, "t1") {
					t.Error("inside the transaction its own write is not visible")
				}
				if exists(t, context.Background(), db, "t1") {
					t.Error("outside the transaction an uncommitted write is visible")
				}
				return nil
			},
			want: map[string]bool{"t1": true, "t2": true},
		},
		{
			name: "a failing function commits nothing",
			fn: func(t *testing.T, ctx context.Context, db *DB) error {
				if err := db.Registry().CreateThing(ctx, testThing("t1")); err != nil {
					return err
				}
				return boom
			},
			wantErr: true,
			want:    map[string]bool{"t1": false},
		},
		{
			name: "a failing nested call undoes only its own writes",
			fn: func(t *testing.T, ctx context.Context, db *DB) error {
				if err := db.Registry().CreateThing(ctx, testThing("t1")); err != nil {
					return err
				}
				err := db.Atomically(ctx, func(ctx context.Context) error {
					if err := db.Registry().CreateThing(ctx, testThing("t2")); err != nil {
						return err
					}
					return boom
				})
				if !errors.Is(err, boom) {
					t.Errorf("nested Atomically = %v, want boom", err)
				}
				if exists(t, ctx, db, "t2") {
					t.Error("the failed nested call's write is still there")
				}
				return db.Registry().CreateThing(ctx, testThing("t3"))
			},
			want: map[string]bool{"t1": true, "t2": false, "t3": true},
		},
		{
			name: "a failed statement in a nested call does not poison the transaction",
			fn: func(t *testing.T, ctx context.Context, db *DB) error {
				if err := db.Registry().CreateThing(ctx, testThing("t1")); err != nil {
					return err
				}
				err := db.Atomically(ctx, func(ctx context.Context) error {
					return db.Registry().CreateThing(ctx, testThing("t1")) // exists: a unique violation
				})
				if !errkind.Is(err, errkind.Conflict) {
					t.Errorf("creating t1 twice = %v, want Conflict", err)
				}
				return db.Registry().CreateThing(ctx, testThing("t2"))
			},
			want: map[string]bool{"t1": true, "t2": true},
		},
		{
			name: "InTx inside becomes a savepoint",
			fn: func(t *testing.T, ctx context.Context, db *DB) error {
				if err := db.Registry().CreateThing(ctx, testThing("t1")); err != nil {
					return err
				}
				err := db.InTx(ctx, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, db.q(`DELETE FROM registry_things WHERE name = ?`), "t1"); err != nil {
						return err
					}
					return boom
				})
				if !errors.Is(err, boom) {
					t.Errorf("InTx = %v, want boom", err)
				}
				if !exists(t, ctx, db, "t1") {
					t.Error("the failed InTx's delete was not undone")
				}
				return db.InTx(ctx, func(tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, db.q(`DELETE FROM registry_things WHERE name = ?`), "t1")
					return err
				})
			},
			want: map[string]bool{"t1": false},
		},
	}
	for _, tc := range tests {
		for _, deferred := range []bool{false, true} {
			name := tc.name
			if deferred {
				name += " (inserts deferred)"
			}
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				db := newTestDB(t)
				if deferred {
					ctx = WithDeferredInserts(ctx)
				}
				err := db.Atomically(ctx, func(ctx context.Context) error { return tc.fn(t, ctx, db) })
				if (err != nil) != tc.wantErr {
					t.Fatalf("Atomically = %v, want error %v", err, tc.wantErr)
				}
				for name, want := range tc.want {
					if got := exists(t, ctx, db, name); got != want {
						t.Errorf("after Atomically thing %s exists = %v, want %v", name, got, want)
					}
				}
			})
		}
	}
}
