package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// memStore is an in-memory tasks.Store with the contract's semantics.
type memStore struct {
	mu    sync.Mutex
	tasks map[string]*tasks.Task
	items map[string][]tasks.Item
	done  map[string]map[int]bool
	saves int
}

func newMemStore() *memStore {
	return &memStore{tasks: map[string]*tasks.Task{}, items: map[string][]tasks.Item{}, done: map[string]map[int]bool{}}
}

func (m *memStore) CreateTask(ctx context.Context, t tasks.Task, items []tasks.Item) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tasks[t.ID] = &t
	m.items[t.ID] = append([]tasks.Item(nil), items...)
	m.done[t.ID] = map[int]bool{}
	return nil
}

func (m *memStore) GetTask(ctx context.Context, id string) (tasks.Task, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tasks[id]
	if !ok {
		return tasks.Task{}, errors.New("not found")
	}
	return *t, nil
}

func (m *memStore) ListTasks(ctx context.Context, kind tasks.Kind, count int, after string) ([]tasks.Task, bool, error) {
	return nil, false, nil
}

func (m *memStore) ListItems(ctx context.Context, id string) ([]tasks.Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]tasks.Item(nil), m.items[id]...), nil
}

func (m *memStore) ListItemStates(ctx context.Context, id string) ([]tasks.Item, error) {
	items, _ := m.ListItems(ctx, id)
	for i := range items {
		items[i].Input, items[i].Progress = nil, nil
	}
	return items, nil
}

func (m *memStore) ListBatchItems(ctx context.Context, id string, batch int) ([]tasks.Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []tasks.Item
	for _, it := range m.items[id] {
		if it.Batch == batch {
			out = append(out, it)
		}
	}
	return out, nil
}

func (m *memStore) UpdateItem(ctx context.Context, it tasks.Item) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saves++
	for i := range m.items[it.TaskID] {
		if m.items[it.TaskID][i].Name == it.Name {
			m.items[it.TaskID][i] = it
			return nil
		}
	}
	return errors.New("no such item")
}

func (m *memStore) StartTask(ctx context.Context, id string, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.tasks[id]; t.Status == cdf.StatusWaiting {
		t.Status, t.UpdatedAt = cdf.StatusInProgress, now
	}
	return nil
}

func (m *memStore) CompleteBatch(ctx context.Context, id string, batch int, failed bool, msg string, now time.Time) (tasks.Task, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.tasks[id]
	m.done[id][batch] = true
	t.BatchesComplete = len(m.done[id])
	if failed {
		if t.Status != cdf.StatusFailure && t.StatusMessage == "" {
			t.StatusMessage = msg
		}
		t.Status = cdf.StatusFailure
	}
	if t.BatchesComplete == t.BatchesTotal && t.Status != cdf.StatusFailure {
		t.Status = cdf.StatusSuccess
	}
	t.UpdatedAt = now
	return *t, nil
}

// proc fails the items named in fail, errors transiently for those in flaky
// (once), and records how often each item was worked.
type proc struct {
	mu     sync.Mutex
	fail   map[string]bool
	flaky  map[string]bool
	worked map[string]int
	after  func(items []*tasks.Item)
}

func (p *proc) ProcessItem(ctx context.Context, t tasks.Task, it *tasks.Item, save func(context.Context) error) error {
	p.mu.Lock()
	p.worked[it.Name]++
	flaky := p.flaky[it.Name]
	delete(p.flaky, it.Name)
	p.mu.Unlock()
	if flaky {
		return errors.New("database is busy")
	}
	if err := save(ctx); err != nil {
		return err
	}
	if p.fail[it.Name] {
		it.Status, it.StatusMessage = cdf.StatusFailure, "Failed provisioning: no"
		return nil
	}
	it.Status = cdf.StatusSuccess
	return nil
}

func (p *proc) AfterBatch(ctx context.Context, t tasks.Task, items []*tasks.Item) error {
	if p.after != nil {
		p.after(items)
	}
	return nil
}

func setup(t *testing.T, n, batchSize int, p *proc) (*memStore, *tasks.Runner, string, int) {
	t.Helper()
	st := newMemStore()
	items := make([]tasks.Item, n)
	for i := range items {
		items[i] = tasks.Item{Name: fmt.Sprintf("core-%d", i), Status: cdf.StatusWaiting, CreatedAt: time.Now()}
	}
	batches := tasks.Batches(items, batchSize)
	id := tasks.NewID()
	task := tasks.Task{ID: id, Kind: tasks.KindCore, Status: cdf.StatusWaiting, BatchesTotal: batches}
	for i := range items {
		items[i].TaskID = id
	}
	if err := st.CreateTask(context.Background(), task, items); err != nil {
		t.Fatal(err)
	}
	if p.worked == nil {
		p.worked = map[string]int{}
	}
	return st, &tasks.Runner{Store: st, Processors: map[tasks.Kind]tasks.Processor{tasks.KindCore: p}, Concurrency: 3}, id, batches
}

func TestRunBatch(t *testing.T) {
	tests := []struct {
		name       string
		n, size    int
		fail       []string
		wantStatus string
	}{
		{"all succeed", 7, 3, nil, cdf.StatusSuccess},
		{"one fails", 7, 3, []string{"core-4"}, cdf.StatusFailure},
		{"single batch", 2, 20, nil, cdf.StatusSuccess},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &proc{fail: map[string]bool{}}
			for _, f := range tt.fail {
				p.fail[f] = true
			}
			st, r, id, batches := setup(t, tt.n, tt.size, p)
			for b := range batches {
				if err := r.RunBatch(context.Background(), tasks.BatchRef{TaskID: id, Batch: b}); err != nil {
					t.Fatal(err)
				}
			}
			task, _ := st.GetTask(context.Background(), id)
			if task.Status != tt.wantStatus || task.BatchesComplete != batches {
				t.Fatalf("task = %+v", task)
			}
			items, _ := st.ListItems(context.Background(), id)
			for _, it := range items {
				want := cdf.StatusSuccess
				if p.fail[it.Name] {
					want = cdf.StatusFailure
				}
				if it.Status != want || it.UpdatedAt.IsZero() {
					t.Fatalf("item %s = %+v", it.Name, it)
				}
			}
		})
	}
}

// A transient error fails the batch run; the retry works only what is left.
func TestRunBatchRetryWorksOnlyUnfinishedItems(t *testing.T) {
	p := &proc{flaky: map[string]bool{"core-1": true}}
	st, r, id, _ := setup(t, 3, 10, p)
	ref := tasks.BatchRef{TaskID: id, Batch: 0}
	if err := r.RunBatch(context.Background(), ref); err == nil {
		t.Fatal("RunBatch with a transient failure returned nil")
	}
	if task, _ := st.GetTask(context.Background(), id); task.BatchesComplete != 0 || task.Status != cdf.StatusInProgress {
		t.Fatalf("after a failed run: %+v", task)
	}
	if err := r.RunBatch(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	// Running a finished batch again changes nothing.
	if err := r.RunBatch(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	if task, _ := st.GetTask(context.Background(), id); task.Status != cdf.StatusSuccess || task.BatchesComplete != 1 {
		t.Fatalf("task = %+v", task)
	}
	got := []string{}
	for name, n := range p.worked {
		got = append(got, fmt.Sprintf("%s=%d", name, n))
	}
	sort.Strings(got)
	if fmt.Sprint(got) != "[core-0=1 core-1=2 core-2=1]" {
		t.Fatalf("items worked: %v", got)
	}
}

// AfterBatch may turn items into failures; the runner saves them and fails the task.
func TestAfterBatchFailures(t *testing.T) {
	p := &proc{after: func(items []*tasks.Item) {
		items[1].Status, items[1].StatusMessage = cdf.StatusFailure, "Client device cannot be associated with core c"
	}}
	st, r, id, _ := setup(t, 2, 10, p)
	if err := r.RunBatch(context.Background(), tasks.BatchRef{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	items, _ := st.ListItems(context.Background(), id)
	if items[1].Status != cdf.StatusFailure || items[1].StatusMessage == "" {
		t.Fatalf("item = %+v", items[1])
	}
	if task, _ := st.GetTask(context.Background(), id); task.Status != cdf.StatusFailure {
		t.Fatalf("task = %+v", task)
	}
}

func TestFailBatchEndsTheTask(t *testing.T) {
	st, r, id, _ := setup(t, 3, 10, &proc{})
	if err := r.FailBatch(context.Background(), tasks.BatchRef{TaskID: id}, "gave up after 8 attempts: disk full"); err != nil {
		t.Fatal(err)
	}
	task, _ := st.GetTask(context.Background(), id)
	if task.Status != cdf.StatusFailure || task.StatusMessage == "" {
		t.Fatalf("task = %+v", task)
	}
	items, _ := st.ListItems(context.Background(), id)
	for _, it := range items {
		if it.Status != cdf.StatusFailure {
			t.Fatalf("item = %+v", it)
		}
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 5000 {
		id := tasks.NewID()
		if len(id) != 9 {
			t.Fatalf("id %q is not 9 characters", id)
		}
		for _, c := range id {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-') {
				t.Fatalf("id %q has %q", id, c)
			}
		}
		if id[0] == '-' || id[0] == '_' {
			t.Fatalf("id %q starts with %q; it would read as a flag on a command line", id, id[0])
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}
