package tasks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// expandStore adds the two-stage methods to memStore, queuing batch refs.
type expandStore struct {
	*memStore
	queued []tasks.BatchRef
}

func (m *expandStore) CreateExpandingTask(ctx context.Context, t tasks.Task) error {
	if err := m.CreateTask(ctx, t, nil); err != nil {
		return err
	}
	m.queued = append(m.queued, tasks.BatchRef{TaskID: t.ID, Batch: tasks.ExpandBatch})
	return nil
}

func (m *expandStore) AddItems(ctx context.Context, id string, items []tasks.Item, total int, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.tasks[id]
	if t.BatchesTotal > 0 || t.Status == cdf.StatusFailure {
		return false, nil
	}
	t.BatchesTotal = total
	m.items[id] = append([]tasks.Item(nil), items...)
	for b := 0; b < total; b++ {
		m.queued = append(m.queued, tasks.BatchRef{TaskID: id, Batch: b})
	}
	return true, nil
}

func (m *expandStore) FailTask(ctx context.Context, id, msg string, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.tasks[id]
	t.Status = cdf.StatusFailure
	if t.StatusMessage == "" {
		t.StatusMessage = msg
	}
	return nil
}

// awaitProc expands to the names it holds and leaves items in await
// waiting, as deployments do; others succeed.
type awaitProc struct {
	names   []string
	await   map[string]bool
	expErr  error
	expands int
}

func (p *awaitProc) Expand(ctx context.Context, t tasks.Task) ([]tasks.Item, int, error) {
	p.expands++
	if p.expErr != nil {
		return nil, 0, p.expErr
	}
	items := make([]tasks.Item, len(p.names))
	for i, n := range p.names {
		items[i] = tasks.Item{Name: n}
	}
	return items, 2, nil
}

func (p *awaitProc) ProcessItem(ctx context.Context, t tasks.Task, it *tasks.Item, save func(context.Context) error) error {
	if p.await[it.Name] {
		if err := save(ctx); err != nil {
			return err
		}
		return tasks.ErrAwait
	}
	it.Status = cdf.StatusSuccess
	return nil
}

func (p *awaitProc) AfterBatch(ctx context.Context, t tasks.Task, items []*tasks.Item) error {
	return nil
}

func newExpandSetup(t *testing.T, p *awaitProc) (*expandStore, *tasks.Runner, string) {
	t.Helper()
	st := &expandStore{memStore: newMemStore()}
	id := tasks.NewID()
	if err := st.CreateExpandingTask(context.Background(), tasks.Task{ID: id, Kind: tasks.KindDeployment, Status: cdf.StatusWaiting}); err != nil {
		t.Fatal(err)
	}
	return st, &tasks.Runner{Store: st, Processors: map[tasks.Kind]tasks.Processor{tasks.KindDeployment: p}}, id
}

func (m *expandStore) drain(t *testing.T, r *tasks.Runner) {
	t.Helper()
	for len(m.queued) > 0 {
		ref := m.queued[0]
		m.queued = m.queued[1:]
		if err := r.RunBatch(context.Background(), ref); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExpandAndAwait(t *testing.T) {
	ctx := context.Background()
	p := &awaitProc{names: []string{"a", "b", "c"}, await: map[string]bool{"a": true, "c": true}}
	st, r, id := newExpandSetup(t, p)
	st.drain(t, r)
	task, _ := st.GetTask(ctx, id)
	if task.BatchesTotal != 2 || task.BatchesComplete != 0 || task.Status != cdf.StatusInProgress {
		t.Fatalf("task = %+v", task)
	}
	// Running the expansion again (a retried job) adds nothing.
	if err := r.RunBatch(ctx, tasks.BatchRef{TaskID: id, Batch: tasks.ExpandBatch}); err != nil || len(st.queued) != 0 {
		t.Fatalf("re-expansion: %v, queued %v", err, st.queued)
	}
	items, _ := st.ListItems(ctx, id)
	if items[0].Status != cdf.StatusInProgress || items[1].Status != cdf.StatusSuccess || items[2].Status != cdf.StatusInProgress {
		t.Fatalf("items = %+v", items)
	}
	// A report finishes a: batch 0 completes; batch 1 still waits on c.
	items[0].Status = cdf.StatusSuccess
	if err := st.UpdateItem(ctx, items[0]); err != nil {
		t.Fatal(err)
	}
	if done, err := r.CompleteIfDone(ctx, tasks.BatchRef{TaskID: id, Batch: 0}); err != nil || !done {
		t.Fatalf("CompleteIfDone(0) = %v, %v", done, err)
	}
	if done, err := r.CompleteIfDone(ctx, tasks.BatchRef{TaskID: id, Batch: 1}); err != nil || done {
		t.Fatalf("CompleteIfDone(1) = %v, %v", done, err)
	}
	if task, _ := st.GetTask(ctx, id); task.BatchesComplete != 1 || task.Status != cdf.StatusInProgress {
		t.Fatalf("task = %+v", task)
	}
	items[2].Status, items[2].StatusMessage = cdf.StatusFailure, "no report"
	_ = st.UpdateItem(ctx, items[2])
	if done, _ := r.CompleteIfDone(ctx, tasks.BatchRef{TaskID: id, Batch: 1}); !done {
		t.Fatal("batch 1 not completed")
	}
	if task, _ := st.GetTask(ctx, id); task.BatchesComplete != 2 || task.Status != cdf.StatusFailure {
		t.Fatalf("task = %+v", task)
	}
}

func TestExpandFailures(t *testing.T) {
	tests := []struct {
		name    string
		p       *awaitProc
		wantMsg string
	}{
		{"failure", &awaitProc{expErr: tasks.Fail("targets resolved to %s", "nothing")}, "targets resolved to nothing"},
		{"no items", &awaitProc{}, "the task's targets resolved to no items"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, r, id := newExpandSetup(t, tt.p)
			st.drain(t, r)
			task, _ := st.GetTask(context.Background(), id)
			if task.Status != cdf.StatusFailure || task.StatusMessage != tt.wantMsg || task.BatchesTotal != 0 {
				t.Fatalf("task = %+v", task)
			}
		})
	}
	// A transient error is returned for the queue to retry; the last
	// attempt's FailBatch fails the task.
	p := &awaitProc{expErr: errors.New("database is busy")}
	st, r, id := newExpandSetup(t, p)
	ref := tasks.BatchRef{TaskID: id, Batch: tasks.ExpandBatch}
	if err := r.RunBatch(context.Background(), ref); err == nil {
		t.Fatal("transient expansion error not returned")
	}
	if err := r.FailBatch(context.Background(), ref, "gave up"); err != nil {
		t.Fatal(err)
	}
	if task, _ := st.GetTask(context.Background(), id); task.Status != cdf.StatusFailure || task.StatusMessage != "gave up" {
		t.Fatalf("task = %+v", task)
	}
}

func TestExpandNeedsExpandStore(t *testing.T) {
	st := newMemStore()
	id := tasks.NewID()
	_ = st.CreateTask(context.Background(), tasks.Task{ID: id, Kind: tasks.KindDeployment}, nil)
	r := &tasks.Runner{Store: st, Processors: map[tasks.Kind]tasks.Processor{tasks.KindDeployment: &awaitProc{names: []string{"a"}}}}
	if err := r.RunBatch(context.Background(), tasks.BatchRef{TaskID: id, Batch: tasks.ExpandBatch}); err == nil {
		t.Fatal("expansion without an ExpandStore succeeded")
	}
}
