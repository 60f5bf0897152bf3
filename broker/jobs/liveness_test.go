package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// defaultTestPostgres is the server the PostgreSQL tests use unless
// GGFLEET_TEST_POSTGRES names another.
const defaultTestPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// postgresQueue creates a fresh PostgreSQL database (dropped at the end),
// migrates the store and the queue there, and returns the store and an
// unstarted queue with the given JobTimeout. Without a reachable server the
// test is skipped outside CI and fails in CI.
func postgresQueue(t *testing.T, jobTimeout time.Duration) (*sqlstore.DB, *Queue) {
	t.Helper()
	admin := os.Getenv("GGFLEET_TEST_POSTGRES")
	if admin == "" {
		admin = defaultTestPostgres
	}
	ctx := context.Background()
	adb, err := sql.Open("pgx", admin)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = adb.PingContext(pctx)
		cancel()
	}
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL (GGFLEET_TEST_POSTGRES or %s) is not reachable: %v; install and start PostgreSQL", defaultTestPostgres, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { adb.Close() })
	name := fmt.Sprintf("ggfleet_jobs_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := adb.Exec(`CREATE DATABASE ` + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := adb.Exec(`DROP DATABASE ` + name + ` WITH (FORCE)`); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	db, err := sqlstore.OpenPostgres(ctx, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	runner := &tasks.Runner{Store: db, Processors: map[tasks.Kind]tasks.Processor{tasks.KindCore: &fakeProcessor{}}}
	q, err := New(Config{DB: db.SQL(), Postgres: true, Runner: runner, JobTimeout: jobTimeout, RetryPolicy: fastRetry{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	db.SetEnqueuer(q.EnqueueTx)
	return db, q
}

// TestRescueOrphans: the rescuer hands back the running jobs of a replica
// whose liveness lock is free, and the jobs a live replica has been running
// far past JobTimeout (their outcome was lost, which used to leave the task
// InProgress for river's one-hour rescue); it leaves a live replica's
// recent jobs alone.
func TestRescueOrphans(t *testing.T) {
	ctx := context.Background()
	db, q := postgresQueue(t, 10*time.Second)
	h := &harness{db: db, queue: q}
	id := h.createTask(t, 4, 1) // 4 batches, 4 jobs

	// A live replica: it holds its liveness lock on a session of its own.
	live, err := db.SQL().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Close() })
	if _, err := live.ExecContext(ctx, `SELECT pg_advisory_lock(`+livenessKeySQL+`)`, "live-replica"); err != nil {
		t.Fatal(err)
	}

	jobs := []struct {
		owner       string
		runningFor  time.Duration
		wantRescued bool
	}{
		{"dead-replica", 10 * time.Second, true},
		{"live-replica", 10 * time.Second, false},
		{"live-replica", 10*time.Second + stuckMargin + time.Minute, true},
	}
	var ids []int64
	rows, err := db.SQL().QueryContext(ctx, `SELECT id FROM river_job WHERE args->>'taskId' = $1 ORDER BY id`, id)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var jid int64
		if err := rows.Scan(&jid); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, jid)
	}
	rows.Close()
	if len(ids) != 4 {
		t.Fatalf("%d jobs enqueued, want 4", len(ids))
	}
	for i, j := range jobs {
		if _, err := db.SQL().ExecContext(ctx, `UPDATE river_job SET state = 'running', attempt = 1,
			attempted_at = now() - make_interval(secs => $1), attempted_by = ARRAY[$2::text] WHERE id = $3`,
			j.runningFor.Seconds(), j.owner, ids[i]); err != nil {
			t.Fatal(err)
		}
	}

	n, err := q.RescueOrphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("RescueOrphans rescued %d jobs, want 2", n)
	}
	for i, j := range jobs {
		var state string
		if err := db.SQL().QueryRowContext(ctx, `SELECT state FROM river_job WHERE id = $1`, ids[i]).Scan(&state); err != nil {
			t.Fatal(err)
		}
		want := "running"
		if j.wantRescued {
			want = "available"
		}
		if state != want {
			t.Errorf("job of %s running for %s is %s, want %s", j.owner, j.runningFor, state, want)
		}
	}
	// The live replica's lock is still its own: checking it did not steal it.
	var held bool
	if err := db.SQL().QueryRowContext(ctx, `SELECT pg_try_advisory_lock(`+livenessKeySQL+`)`, "live-replica").Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held {
		t.Error("the live replica's liveness lock was free after the rescue")
	}
}

// TestWatchTakesLivenessAgain: when the session holding a replica's
// liveness lock dies (as when PostgreSQL restarts), Watch does not stop the
// replica: it takes the lock again on a new session, so other replicas see
// it alive again and it keeps working.
func TestWatchTakesLivenessAgain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, q := postgresQueue(t, 10*time.Second)
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		_ = q.Stop(sctx)
	})
	watched := make(chan error, 1)
	go func() { watched <- q.Watch(ctx) }()

	holder := func() int {
		t.Helper()
		var pid int
		err := db.SQL().QueryRowContext(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND ((classid::bigint << 32) | objid::bigint) = `+livenessKeySQL, q.ID()).Scan(&pid)
		if errors.Is(err, sql.ErrNoRows) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	first := holder()
	if first == 0 {
		t.Fatal("no session holds the liveness lock after Start")
	}
	if _, err := db.SQL().ExecContext(ctx, `SELECT pg_terminate_backend($1)`, first); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if pid := holder(); pid != 0 && pid != first {
			break
		}
		select {
		case err := <-watched:
			t.Fatalf("Watch returned %v after the liveness session died, want it to take the lock again", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the liveness lock was not taken again within 2 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if dead, err := q.ownerDead(ctx, q.ID()+"-other"); err != nil || !dead {
		t.Fatalf("ownerDead(unknown replica) = %v, %v; want true", dead, err)
	}
	cancel()
	if err := <-watched; err != nil {
		t.Fatalf("Watch = %v after its context ended, want nil", err)
	}
}

// TestInsertOnlyQueue: an API-only replica's queue enqueues a task's
// batches and works none of them, and holds no liveness lock; a replica
// with workers runs them all.
func TestInsertOnlyQueue(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, worker := postgresQueue(t, 30*time.Second)
	api, err := New(Config{DB: db.SQL(), Postgres: true, Runner: worker.runner, InsertOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if !api.insertOnly || worker.insertOnly {
		t.Fatalf("insertOnly = %v (api), %v (worker)", api.insertOnly, worker.insertOnly)
	}
	db.SetEnqueuer(api.EnqueueTx) // the task is created through the API-only replica
	if err := api.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := api.Stop(sctx); err != nil {
			t.Errorf("stop the insert-only queue: %v", err)
		}
	})
	watched := make(chan error, 1)
	go func() { watched <- api.Watch(ctx) }()

	h := &harness{db: db, queue: worker}
	id := h.createTask(t, 6, 2) // 3 batches
	jobStates := func() map[string]int {
		t.Helper()
		states := map[string]int{}
		rows, err := db.SQL().QueryContext(ctx, `SELECT state, coalesce(array_to_string(attempted_by, ','), '') FROM river_job WHERE args->>'taskId' = $1`, id)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var state, by string
			if err := rows.Scan(&state, &by); err != nil {
				t.Fatal(err)
			}
			states[state+" by "+by]++
		}
		return states
	}
	time.Sleep(10 * DefaultPollInterval) // ten of a worker's polls: the API-only queue fetches nothing
	if got := jobStates(); got["available by "] != 3 || len(got) != 1 {
		t.Fatalf("jobs with only the insert-only queue running: %v, want 3 available and never attempted", got)
	}

	h.start(t) // a replica with workers
	if task := h.waitFinal(t, id); task.Status != cdf.StatusSuccess {
		t.Fatalf("task %s, want Success", task.Status)
	}
	deadline := time.Now().Add(30 * time.Second) // river records a job completed just after its task is
	for got := jobStates(); got["completed by "+worker.ID()] != 3 || len(got) != 1; got = jobStates() {
		if time.Now().After(deadline) {
			t.Fatalf("jobs after the task: %v, want 3 completed, each attempted by %s only", got, worker.ID())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var free bool
	if err := db.SQL().QueryRowContext(ctx, `SELECT pg_try_advisory_lock(`+livenessKeySQL+`)`, api.ID()).Scan(&free); err != nil {
		t.Fatal(err)
	}
	if !free {
		t.Error("the insert-only queue's liveness key is locked; it runs no batches and should hold none")
	}
	cancel()
	if err := <-watched; err != nil {
		t.Errorf("Watch = %v after its context ended, want nil", err)
	}
}
