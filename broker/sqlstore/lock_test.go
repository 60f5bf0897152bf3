package sqlstore

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

func TestDialectBody(t *testing.T) {
	body := "CREATE TABLE a (x INT);\n-- sqlite: CREATE TABLE b (y BLOB);\n  -- postgres: CREATE TABLE b (y BYTEA);\n-- plain comment\n"
	tests := []struct {
		dialect Dialect
		want    []string
	}{
		{SQLite, []string{"CREATE TABLE a (x INT)", "CREATE TABLE b (y BLOB)"}},
		{Postgres, []string{"CREATE TABLE a (x INT)", "CREATE TABLE b (y BYTEA)"}},
	}
	for _, tt := range tests {
		got := splitStatements(dialectBody(body, tt.dialect))
		if len(got) != len(tt.want) {
			t.Fatalf("dialect %d: statements %q, want %q", tt.dialect, got, tt.want)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Fatalf("dialect %d: statements %q, want %q", tt.dialect, got, tt.want)
			}
		}
	}
}

func TestMapErrPostgresCodes(t *testing.T) {
	tests := []struct {
		code string
		kind errkind.Kind
	}{
		{"23505", errkind.Conflict},
		{"08006", errkind.Unavailable},
		{"53100", errkind.Unavailable},
		{"57P01", errkind.Unavailable},
	}
	for _, tt := range tests {
		err := mapErr(&pgconn.PgError{Code: tt.code, Message: "boom"}, "do it")
		if !errkind.Is(err, tt.kind) {
			t.Errorf("code %s: %v is not %v", tt.code, err, tt.kind)
		}
	}
	if err := mapErr(&pgconn.PgError{Code: "42601"}, "do it"); errkind.Is(err, errkind.Conflict) || errkind.Is(err, errkind.Unavailable) {
		t.Errorf("syntax error classified as %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db?sslmode=disable": "postgres://u:xxxxx@h:5432/db?sslmode=disable",
		"postgres://u@h/db":                             "postgres://u@h/db",
		"sqlite:/x.db":                                  "sqlite:/x.db",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMigrateConcurrently starts several "replicas" on one empty database at
// once: every one must succeed and the schema must be migrated once.
func TestMigrateConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ggfleet.db")
	openTestDB(t, path) // creates the database (and on PostgreSQL the schema)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := openTestDB(t, path)
			if err := db.Migrate(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

// TestRunAsLeader runs the same leader-only work on two instances sharing
// one PostgreSQL database: exactly one runs it at a time, and when the
// leader's session dies the other takes over.
func TestRunAsLeader(t *testing.T) {
	if testDialect != Postgres {
		t.Skip("on SQLite the process is always the leader (the data-dir lock makes it the only one)")
	}
	path := filepath.Join(t.TempDir(), "ggfleet.db")
	dbs := []*DB{openTestDB(t, path), openTestDB(t, path)}
	name := "test-leader-" + filepath.Base(filepath.Dir(path))

	var running, maxRunning, started atomic.Int32
	leaderPID := make(chan int, 2)
	work := func(db *DB) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				m := maxRunning.Load()
				if n <= m || maxRunning.CompareAndSwap(m, n) {
					break
				}
			}
			started.Add(1)
			// Report the backend holding the lock, so the test can kill it.
			var pid int
			if err := db.sql.QueryRowContext(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
				AND ((classid::bigint << 32) | objid::bigint) = $1`, LockKey(name)).Scan(&pid); err != nil {
				return err
			}
			leaderPID <- pid
			<-ctx.Done()
			return nil
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make(chan error, 2)
	for _, db := range dbs {
		go func() { results <- db.RunAsLeader(ctx, name, work(db)) }()
	}
	var pid int
	select {
	case pid = <-leaderPID:
	case <-time.After(30 * time.Second):
		t.Fatal("no replica became the leader within 30s")
	}
	time.Sleep(3 * LeaderRetryInterval) // the other keeps trying meanwhile
	if got := started.Load(); got != 1 {
		t.Fatalf("leader work started %d times, want 1", got)
	}

	// Kill the leader's session: it must stop its work and a replica (the
	// other, or the old one standing again) take over; RunAsLeader keeps
	// going instead of returning, so a replica survives a database restart.
	if _, err := testPGAdmin.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-leaderPID:
	case err := <-results:
		t.Fatalf("RunAsLeader returned %v after losing the leadership, want it to stand again", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no replica took over the leadership within 30s")
	}
	if got := started.Load(); got != 2 {
		t.Fatalf("leader work started %d times, want 2 (before and after the takeover)", got)
	}
	if m := maxRunning.Load(); m != 1 {
		t.Fatalf("leader work ran on %d replicas at once, want 1", m)
	}
	cancel()
	for range dbs {
		select {
		case err := <-results:
			if err != nil {
				t.Fatalf("RunAsLeader returned %v after its context ended, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("RunAsLeader did not return after its context ended")
		}
	}
}
