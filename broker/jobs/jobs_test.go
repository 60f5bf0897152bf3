package jobs

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// fastRetry retries failed jobs almost at once, so tests need not wait for
// river's exponential backoff.
type fastRetry struct{}

func (fastRetry) NextRetry(*rivertype.JobRow) time.Time { return time.Now().Add(10 * time.Millisecond) }

// fakeProcessor succeeds every item once it has failed transiently
// failFirst times (counted per item); failFirst < 0 fails forever.
type fakeProcessor struct {
	failFirst int

	mu    sync.Mutex
	calls map[string]int
}

func (p *fakeProcessor) ProcessItem(ctx context.Context, t tasks.Task, it *tasks.Item, save func(context.Context) error) error {
	p.mu.Lock()
	if p.calls == nil {
		p.calls = map[string]int{}
	}
	p.calls[it.Name]++
	n := p.calls[it.Name]
	p.mu.Unlock()
	if p.failFirst < 0 || n <= p.failFirst {
		return fmt.Errorf("transient trouble on call %d", n)
	}
	it.Status = cdf.StatusSuccess
	return nil
}

func (p *fakeProcessor) AfterBatch(ctx context.Context, t tasks.Task, items []*tasks.Item) error {
	return nil
}

func (p *fakeProcessor) callsOf(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[name]
}

type harness struct {
	db    *sqlstore.DB
	queue *Queue
}

// newHarness opens a migrated SQLite database and a queue over it whose
// runner uses proc for core tasks. The queue is not started.
func newHarness(t *testing.T, proc tasks.Processor, maxAttempts int) *harness {
	t.Helper()
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	runner := &tasks.Runner{Store: db, Processors: map[tasks.Kind]tasks.Processor{tasks.KindCore: proc}}
	q, err := New(Config{
		DB: db.SQL(), Runner: runner, MaxAttempts: maxAttempts, Workers: 2,
		JobTimeout: 30 * time.Second, RetryPolicy: fastRetry{}, PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	db.SetEnqueuer(q.EnqueueTx)
	return &harness{db: db, queue: q}
}

func (h *harness) start(t *testing.T) {
	t.Helper()
	if err := h.queue.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.queue.Stop(ctx); err != nil {
			t.Errorf("stop queue: %v", err)
		}
	})
}

// createTask stores a core task of n items in batches of size (which
// enqueues its jobs) and returns its id.
func (h *harness) createTask(t *testing.T, n, size int) string {
	t.Helper()
	id := tasks.NewID()
	items := make([]tasks.Item, n)
	for i := range items {
		items[i] = tasks.Item{TaskID: id, Name: fmt.Sprintf("core-%d", i), Status: cdf.StatusWaiting}
	}
	task := tasks.Task{
		ID: id, Kind: tasks.KindCore, Type: cdf.TaskCreate, Status: cdf.StatusWaiting,
		CreatedAt: time.Now(), BatchesTotal: tasks.Batches(items, size),
	}
	if err := h.db.CreateTask(context.Background(), task, items); err != nil {
		t.Fatal(err)
	}
	return id
}

// waitFinal polls until the task is Success or Failure (generous deadline).
func (h *harness) waitFinal(t *testing.T, id string) tasks.Task {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		task, err := h.db.GetTask(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if task.Status == cdf.StatusSuccess || task.Status == cdf.StatusFailure {
			return task
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s still %s (%d/%d batches) after 60s", id, task.Status, task.BatchesComplete, task.BatchesTotal)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) items(t *testing.T, id string) []tasks.Item {
	t.Helper()
	list, err := h.db.ListItems(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func TestJobRunsTaskToSuccess(t *testing.T) {
	tests := []struct {
		name      string
		failFirst int
		wantCalls int
	}{
		{name: "succeeds at once", failFirst: 0, wantCalls: 1},
		{name: "fails transiently twice then succeeds", failFirst: 2, wantCalls: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			proc := &fakeProcessor{failFirst: tc.failFirst}
			h := newHarness(t, proc, 5)
			h.start(t)
			id := h.createTask(t, 5, 2) // 3 batches
			task := h.waitFinal(t, id)
			if task.Status != cdf.StatusSuccess || task.BatchesComplete != 3 || task.BatchesTotal != 3 {
				t.Fatalf("task = %s %q %d/%d, want Success 3/3", task.Status, task.StatusMessage, task.BatchesComplete, task.BatchesTotal)
			}
			for _, it := range h.items(t, id) {
				if it.Status != cdf.StatusSuccess {
					t.Errorf("item %s is %s", it.Name, it.Status)
				}
				if got := proc.callsOf(it.Name); got != tc.wantCalls {
					t.Errorf("item %s processed %d times, want %d", it.Name, got, tc.wantCalls)
				}
			}
		})
	}
}

func TestJobFailsTaskAfterLastAttempt(t *testing.T) {
	proc := &fakeProcessor{failFirst: -1}
	h := newHarness(t, proc, 3)
	h.start(t)
	id := h.createTask(t, 3, 2) // 2 batches
	task := h.waitFinal(t, id)
	// Failure is sticky from the first failed batch (spec §6): wait for
	// the other batch to give up too.
	for deadline := time.Now().Add(60 * time.Second); task.BatchesComplete < task.BatchesTotal && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		task = h.waitFinal(t, id)
	}
	if task.Status != cdf.StatusFailure || task.BatchesComplete != 2 {
		t.Fatalf("task = %s %d/%d, want Failure with every batch complete", task.Status, task.BatchesComplete, task.BatchesTotal)
	}
	if !strings.Contains(task.StatusMessage, "gave up after 3 attempts") {
		t.Errorf("task message %q does not say it gave up after 3 attempts", task.StatusMessage)
	}
	for _, it := range h.items(t, id) {
		if it.Status != cdf.StatusFailure || !strings.Contains(it.StatusMessage, "transient trouble") {
			t.Errorf("item %s = %s %q, want Failure with the cause", it.Name, it.Status, it.StatusMessage)
		}
		if got := proc.callsOf(it.Name); got != 3 {
			t.Errorf("item %s processed %d times, want 3", it.Name, got)
		}
	}
}

func TestJobRecoversAbandonedAfterCrash(t *testing.T) {
	ctx := context.Background()
	proc := &fakeProcessor{}
	h := newHarness(t, proc, 5)
	id := h.createTask(t, 4, 2) // 2 batches, jobs enqueued, nobody working

	// Simulate a predecessor killed while working the first batch.
	res, err := h.db.SQL().ExecContext(ctx, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = datetime('now', 'subsec')
		WHERE id = (SELECT min(id) FROM river_job WHERE kind = 'task_batch')`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("marked %d jobs running, want 1", n)
	}

	n, err := h.queue.RecoverAbandoned(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("RecoverAbandoned found %d jobs, want 1", n)
	}
	var running int
	if err := h.db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM river_job WHERE state = 'running'`).Scan(&running); err != nil {
		t.Fatal(err)
	}
	if running != 0 {
		t.Fatalf("%d jobs still running after recovery", running)
	}

	h.start(t)
	task := h.waitFinal(t, id)
	if task.Status != cdf.StatusSuccess || task.BatchesComplete != 2 {
		t.Fatalf("task = %s %q %d/%d, want Success 2/2", task.Status, task.StatusMessage, task.BatchesComplete, task.BatchesTotal)
	}
}

func TestJobNewRequiresDependencies(t *testing.T) {
	if _, err := New(Config{Runner: &tasks.Runner{}}); err == nil {
		t.Error("New without DB succeeded")
	}
	h := newHarness(t, &fakeProcessor{}, 1)
	if _, err := New(Config{DB: h.db.SQL()}); err == nil {
		t.Error("New without Runner succeeded")
	}
	if _, err := New(Config{DB: h.db.SQL(), Runner: &tasks.Runner{}, InsertOnly: true}); err == nil || !strings.Contains(err.Error(), "PostgreSQL") {
		t.Errorf("New insert-only on SQLite = %v, want a refusal naming PostgreSQL", err)
	}
	if err := h.queue.EnqueueTx(context.Background(), nil, nil); err != nil {
		t.Errorf("EnqueueTx of nothing: %v", err)
	}
}

func TestJobForMissingTaskIsCancelled(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, &fakeProcessor{}, 2)
	err := h.db.InTx(ctx, func(tx *sql.Tx) error {
		return h.queue.EnqueueTx(ctx, tx, []tasks.BatchRef{{TaskID: "gone00000", Batch: 0}})
	})
	if err != nil {
		t.Fatal(err)
	}
	h.start(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var state string
		if err := h.db.SQL().QueryRowContext(ctx, `SELECT state FROM river_job WHERE kind = 'task_batch'`).Scan(&state); err != nil {
			t.Fatal(err)
		}
		if state == "cancelled" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job for a missing task is still %s after 60s, want cancelled", state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
