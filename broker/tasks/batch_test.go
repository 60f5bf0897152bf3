package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// batchStore is memStore that also saves many items at once, counting calls.
type batchStore struct {
	*memStore
	batchSaves int
}

func (b *batchStore) UpdateItems(ctx context.Context, items []tasks.Item) error {
	b.mu.Lock()
	b.batchSaves++
	b.mu.Unlock()
	for _, it := range items {
		if err := b.UpdateItem(ctx, it); err != nil {
			return err
		}
	}
	return nil
}

// batchProc works whole batches: items in fail end Failure, in await stay
// InProgress (saved), in flaky make the run fail once; the rest succeed.
type batchProc struct {
	proc
	await map[string]bool
	bad   map[string]bool // left Waiting: a processor bug
	calls [][]string
}

func (p *batchProc) ProcessBatch(ctx context.Context, t tasks.Task, items []*tasks.Item, save func(context.Context, []*tasks.Item) error) error {
	var names []string
	var waiting []*tasks.Item
	for _, it := range items {
		names = append(names, it.Name+"/"+it.Status)
		p.worked[it.Name]++
		if p.flaky[it.Name] {
			delete(p.flaky, it.Name)
			p.calls = append(p.calls, names)
			return errors.New("database is busy")
		}
		switch {
		case p.fail[it.Name]:
			it.Status, it.StatusMessage = cdf.StatusFailure, "no"
		case p.await[it.Name]:
			it.Progress = []byte(`{"waiting":true}`)
			waiting = append(waiting, it)
		case p.bad[it.Name]:
			it.Status = cdf.StatusWaiting
		default:
			it.Status = cdf.StatusSuccess
		}
	}
	p.calls = append(p.calls, names)
	return save(ctx, waiting)
}

func TestRunWholeBatch(t *testing.T) {
	tests := []struct {
		name          string
		n             int
		fail, await   []string
		flaky, bad    []string
		batchStore    bool
		wantErrs      int // failed runs before the batch runs through
		wantStatus    string
		wantComplete  int
		wantCalls     string
		wantBatchSave int // UpdateItems calls of the runs (with batchStore; empty saves make none)
	}{
		{name: "all succeed", n: 3, batchStore: true, wantStatus: cdf.StatusSuccess, wantComplete: 1,
			wantCalls: "[[core-0/InProgress core-1/InProgress core-2/InProgress]]", wantBatchSave: 2},
		{name: "one fails, store without UpdateItems", n: 3, fail: []string{"core-1"}, wantStatus: cdf.StatusFailure, wantComplete: 1,
			wantCalls: "[[core-0/InProgress core-1/InProgress core-2/InProgress]]"},
		{name: "awaiting items leave the batch open", n: 3, await: []string{"core-0", "core-2"}, batchStore: true,
			wantStatus: cdf.StatusInProgress, wantComplete: 0,
			wantCalls: "[[core-0/InProgress core-1/InProgress core-2/InProgress]]", wantBatchSave: 3},
		{name: "a transient error is retried with the items not final", n: 3, flaky: []string{"core-1"}, await: []string{"core-0"}, batchStore: true,
			wantErrs: 1, wantStatus: cdf.StatusInProgress, wantComplete: 0,
			wantCalls: "[[core-0/InProgress core-1/InProgress] [core-0/InProgress core-1/InProgress core-2/InProgress]]", wantBatchSave: 3},
		{name: "an item left Waiting is a bug", n: 2, bad: []string{"core-1"}, wantErrs: -1, wantStatus: cdf.StatusInProgress,
			wantCalls: "[[core-0/InProgress core-1/InProgress]]"},
	}
	set := func(list []string) map[string]bool {
		m := map[string]bool{}
		for _, n := range list {
			m[n] = true
		}
		return m
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &batchProc{proc: proc{fail: set(tt.fail), flaky: set(tt.flaky)}, await: set(tt.await), bad: set(tt.bad)}
			ms, _, id, _ := setup(t, tt.n, 10, &p.proc)
			var store tasks.Store = ms
			bs := &batchStore{memStore: ms}
			if tt.batchStore {
				store = bs
			}
			r := &tasks.Runner{Store: store, Processors: map[tasks.Kind]tasks.Processor{tasks.KindCore: p}}
			ref := tasks.BatchRef{TaskID: id, Batch: 0}
			errs := 0
			for {
				err := r.RunBatch(context.Background(), ref)
				if err == nil {
					break
				}
				errs++
				if tt.wantErrs < 0 || errs > 3 {
					break
				}
			}
			if tt.wantErrs >= 0 && errs != tt.wantErrs {
				t.Fatalf("%d failed runs, want %d", errs, tt.wantErrs)
			}
			if tt.wantErrs < 0 && errs == 0 {
				t.Fatal("RunBatch accepted an item the processor left Waiting")
			}
			if got := fmt.Sprint(p.calls); got != tt.wantCalls {
				t.Fatalf("ProcessBatch calls = %s, want %s", got, tt.wantCalls)
			}
			task, _ := ms.GetTask(context.Background(), id)
			if task.Status != tt.wantStatus || task.BatchesComplete != tt.wantComplete {
				t.Fatalf("task = %+v", task)
			}
			if tt.batchStore && bs.batchSaves != tt.wantBatchSave {
				t.Fatalf("UpdateItems called %d times, want %d", bs.batchSaves, tt.wantBatchSave)
			}
			if tt.wantErrs < 0 {
				return // the failed run saved no outcome
			}
			items, _ := ms.ListItems(context.Background(), id)
			for _, it := range items {
				want := cdf.StatusSuccess
				switch {
				case p.fail[it.Name]:
					want = cdf.StatusFailure
				case p.await[it.Name], p.bad[it.Name]:
					want = cdf.StatusInProgress
				}
				if it.Status != want || it.UpdatedAt.IsZero() {
					t.Fatalf("item %s = %+v, want %s", it.Name, it, want)
				}
				if p.await[it.Name] && string(it.Progress) != `{"waiting":true}` {
					t.Fatalf("awaiting item %s not saved by the processor: %+v", it.Name, it)
				}
			}
		})
	}
}

// Once every awaited item is final, CompleteIfDone completes the batch, and
// running the batch again works nothing.
func TestWholeBatchAwaitThenComplete(t *testing.T) {
	p := &batchProc{proc: proc{}, await: map[string]bool{"core-0": true, "core-1": true}}
	ms, _, id, _ := setup(t, 2, 10, &p.proc)
	r := &tasks.Runner{Store: ms, Processors: map[tasks.Kind]tasks.Processor{tasks.KindCore: p}}
	ctx := context.Background()
	ref := tasks.BatchRef{TaskID: id, Batch: 0}
	if err := r.RunBatch(ctx, ref); err != nil {
		t.Fatal(err)
	}
	items, _ := ms.ListBatchItems(ctx, id, 0)
	for i, it := range items {
		it.Status = cdf.StatusSuccess
		if err := ms.UpdateItem(ctx, it); err != nil {
			t.Fatal(err)
		}
		done, err := r.CompleteIfDone(ctx, ref)
		if err != nil || done != (i == len(items)-1) {
			t.Fatalf("CompleteIfDone after %d reports = %v, %v", i+1, done, err)
		}
	}
	if err := r.RunBatch(ctx, ref); err != nil {
		t.Fatal(err)
	}
	var worked []string
	for n, c := range p.worked {
		worked = append(worked, fmt.Sprintf("%s=%d", n, c))
	}
	sort.Strings(worked)
	if fmt.Sprint(worked) != "[core-0=1 core-1=1]" {
		t.Fatalf("worked = %v", worked)
	}
	if task, _ := ms.GetTask(ctx, id); task.Status != cdf.StatusSuccess || task.BatchesComplete != 1 {
		t.Fatalf("task = %+v", task)
	}
}

// slowStore saves one item slowly (so concurrent saves queue behind it),
// refuses the items in broken, and counts the items UpdateItems saved.
type slowStore struct {
	*memStore
	broken     map[string]bool
	grouped    int // items saved by UpdateItems calls of more than one
	groupCalls int
}

func (s *slowStore) UpdateItem(ctx context.Context, it tasks.Item) error {
	time.Sleep(20 * time.Millisecond)
	if s.broken[it.Name] {
		return errors.New("item " + it.Name + " cannot be saved")
	}
	return s.memStore.UpdateItem(ctx, it)
}

func (s *slowStore) UpdateItems(ctx context.Context, items []tasks.Item) error {
	for _, it := range items {
		if s.broken[it.Name] {
			return errors.New("item " + it.Name + " cannot be saved")
		}
	}
	s.mu.Lock()
	s.groupCalls++
	s.grouped += len(items)
	s.mu.Unlock()
	for _, it := range items {
		if err := s.memStore.UpdateItem(ctx, it); err != nil {
			return err
		}
	}
	return nil
}

// The saves of items worked at the same time share UpdateItems calls; an
// item the store refuses fails its own save only.
func TestItemSavesGrouped(t *testing.T) {
	for _, broken := range []string{"", "core-3"} {
		t.Run("broken="+broken, func(t *testing.T) {
			p := &proc{fail: map[string]bool{}}
			ms, _, id, _ := setup(t, 8, 8, p)
			st := &slowStore{memStore: ms, broken: map[string]bool{broken: broken != ""}}
			r := &tasks.Runner{Store: st, Processors: map[tasks.Kind]tasks.Processor{tasks.KindCore: p}, Concurrency: 8}
			err := r.RunBatch(context.Background(), tasks.BatchRef{TaskID: id, Batch: 0})
			if broken == "" && err != nil {
				t.Fatal(err)
			}
			if broken != "" && (err == nil || !strings.Contains(err.Error(), broken)) {
				t.Fatalf("RunBatch = %v, want the error of %s", err, broken)
			}
			if st.groupCalls == 0 || st.grouped < 2 {
				t.Fatalf("UpdateItems saved %d items in %d calls: the concurrent saves were not grouped", st.grouped, st.groupCalls)
			}
			items, _ := ms.ListItems(context.Background(), id)
			for _, it := range items {
				if it.Name != broken && it.Status != cdf.StatusSuccess {
					t.Fatalf("item %s = %s, want Success (only %q's save fails)", it.Name, it.Status, broken)
				}
			}
		})
	}
}

// byItemProc is a BatchProcessor whose batch fails as a whole, asking for
// the items to be worked one by one (ProcessItem, with proc's outcomes).
type byItemProc struct {
	proc
	batches int
}

func (p *byItemProc) ProcessBatch(ctx context.Context, t tasks.Task, items []*tasks.Item, save func(context.Context, []*tasks.Item) error) error {
	p.batches++
	for _, it := range items {
		it.Status = cdf.StatusSuccess // not saved: the runner must reload
	}
	return fmt.Errorf("%w: batch transaction: database is busy", tasks.ErrItemByItem)
}

// A ProcessBatch error wrapping ErrItemByItem makes the runner work the
// items one by one from what is stored, in the same run: the others are
// saved even when one keeps failing.
func TestWholeBatchFallsBackItemByItem(t *testing.T) {
	p := &byItemProc{proc: proc{fail: map[string]bool{"core-1": true}, flaky: map[string]bool{"core-2": true}}}
	ms, _, id, _ := setup(t, 3, 10, &p.proc)
	r := &tasks.Runner{Store: ms, Processors: map[tasks.Kind]tasks.Processor{tasks.KindCore: p}}
	ctx := context.Background()
	ref := tasks.BatchRef{TaskID: id, Batch: 0}
	if err := r.RunBatch(ctx, ref); err == nil || !strings.Contains(err.Error(), "database is busy") {
		t.Fatalf("first run = %v, want core-2's transient error", err)
	}
	items, _ := ms.ListBatchItems(ctx, id, 0)
	got := map[string]string{}
	for _, it := range items {
		got[it.Name] = it.Status
	}
	if got["core-0"] != cdf.StatusSuccess || got["core-1"] != cdf.StatusFailure || got["core-2"] != cdf.StatusInProgress {
		t.Fatalf("items after the first run = %v", got)
	}
	if err := r.RunBatch(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if task, _ := ms.GetTask(ctx, id); task.Status != cdf.StatusFailure || task.BatchesComplete != 1 {
		t.Fatalf("task = %+v", task)
	}
	if p.batches != 2 || p.worked["core-0"] != 1 || p.worked["core-2"] != 2 {
		t.Fatalf("batches %d, worked %v", p.batches, p.worked)
	}
}
