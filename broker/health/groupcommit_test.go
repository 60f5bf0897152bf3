package health

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// fakeBatch is a BatchStore that records the size of every batch and
// answers each report from its content: cores named ghost* do not exist,
// status SYNC asks for a registry sync, UptimeSeconds odd means older than
// the stored report. before runs at the start of each call (n counts from 0).
type fakeBatch struct {
	mu     sync.Mutex
	sizes  []int
	seen   map[string]int // core → reports written
	before func(n int, rs []Report) error
}

func (f *fakeBatch) PutReports(ctx context.Context, rs []Report) ([]PutResult, error) {
	f.mu.Lock()
	n := len(f.sizes)
	f.sizes = append(f.sizes, len(rs))
	for _, r := range rs {
		f.seen[r.Core]++
	}
	f.mu.Unlock()
	if f.before != nil {
		if err := f.before(n, rs); err != nil {
			return nil, err
		}
	}
	out := make([]PutResult, len(rs))
	for i, r := range rs {
		if strings.HasPrefix(r.Core, "ghost") {
			out[i].Err = errkind.New(errkind.NotFound, "core %s not found", r.Core)
			continue
		}
		out[i] = PutResult{Stored: r.UptimeSeconds%2 == 0, Sync: r.Status == "SYNC"}
	}
	return out, nil
}

func (f *fakeBatch) batchSizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.sizes...)
}

// queued reports how many callers wait in g's queue.
func (g *groupCommit) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// wantResult is what fakeBatch answers for r.
func wantResult(r Report) (PutResult, bool) {
	if strings.HasPrefix(r.Core, "ghost") {
		return PutResult{}, true // NotFound
	}
	return PutResult{Stored: r.UptimeSeconds%2 == 0, Sync: r.Status == "SYNC"}, false
}

func TestGroupCommit(t *testing.T) {
	tests := []struct {
		name      string
		callers   int
		max       int
		wantSizes []int // with the first write held until every other caller is queued
	}{
		{"one caller", 1, 500, []int{1}},
		{"the rest in one batch", 200, 500, []int{1, 199}},
		{"batches bounded", 200, 64, []int{1, 64, 64, 64, 7}},
		{"batches of one", 5, 1, []int{1, 1, 1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeBatch{seen: map[string]int{}}
			g := newGroupCommit(f, tt.max)
			first := make(chan struct{})
			f.before = func(n int, rs []Report) error {
				if n == 0 {
					<-first
				}
				return nil
			}
			reports := make([]Report, tt.callers)
			for i := range reports {
				core := fmt.Sprintf("core-%03d", i)
				if i%7 == 3 {
					core = fmt.Sprintf("ghost-%03d", i)
				}
				status := "HEALTHY"
				if i%5 == 0 {
					status = "SYNC"
				}
				reports[i] = Report{Core: core, Status: status, UptimeSeconds: int64(i)}
			}
			results := make([]PutResult, tt.callers)
			var wg sync.WaitGroup
			wg.Go(func() { results[0] = g.put(context.Background(), reports[0]) })
			waitFor(t, "the first write", func() bool { return len(f.batchSizes()) == 1 })
			for i := 1; i < tt.callers; i++ {
				wg.Go(func() { results[i] = g.put(context.Background(), reports[i]) })
			}
			waitFor(t, "every caller queued", func() bool { return g.queued() == tt.callers-1 })
			close(first)
			wg.Wait()

			for i, r := range reports {
				want, notFound := wantResult(r)
				got := results[i]
				if notFound {
					if !errkind.Is(got.Err, errkind.NotFound) {
						t.Errorf("caller %d (%s): %+v, want NotFound", i, r.Core, got)
					}
					continue
				}
				if got != want {
					t.Errorf("caller %d (%s): %+v, want %+v", i, r.Core, got, want)
				}
			}
			for _, r := range reports {
				if n := f.seen[r.Core]; n != 1 {
					t.Errorf("%s written %d times", r.Core, n)
				}
			}
			if got := f.batchSizes(); fmt.Sprint(got) != fmt.Sprint(tt.wantSizes) {
				t.Errorf("batch sizes %v, want %v", got, tt.wantSizes)
			}
			if g.writing || g.queued() != 0 {
				t.Errorf("after the last write: writing=%v, %d queued", g.writing, g.queued())
			}
		})
	}
}

// TestGroupCommitStress runs many callers against a store that takes a
// little time per batch, so writers come and go while callers arrive.
func TestGroupCommitStress(t *testing.T) {
	f := &fakeBatch{seen: map[string]int{}, before: func(int, []Report) error {
		time.Sleep(200 * time.Microsecond)
		return nil
	}}
	g := newGroupCommit(f, 16)
	const callers, rounds = 50, 40
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for c := range callers {
		wg.Go(func() {
			for i := range rounds {
				r := Report{Core: fmt.Sprintf("core-%02d", c), UptimeSeconds: int64(c + i)}
				if got, want := g.put(context.Background(), r), (PutResult{Stored: (c+i)%2 == 0}); got != want {
					errs <- fmt.Errorf("caller %d round %d: %+v, want %+v", c, i, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := 0
	for _, n := range f.batchSizes() {
		if n > 16 {
			t.Errorf("batch of %d, max 16", n)
		}
		total += n
	}
	if total != callers*rounds {
		t.Errorf("%d reports written, want %d", total, callers*rounds)
	}
	t.Logf("%d reports in %d batches", total, len(f.batchSizes()))
}

func TestGroupCommitStoreFailure(t *testing.T) {
	tests := []struct {
		name  string
		fail  func() error // the second batch's failure
		panic bool
	}{
		{name: "error", fail: func() error { return errors.New("database down") }},
		{name: "panic", panic: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeBatch{seen: map[string]int{}}
			g := newGroupCommit(f, 500)
			first := make(chan struct{})
			f.before = func(n int, rs []Report) error {
				switch n {
				case 0:
					<-first
				case 1:
					if tt.panic {
						panic("store bug")
					}
					return tt.fail()
				}
				return nil
			}
			var wg sync.WaitGroup
			var firstRes PutResult
			wg.Go(func() { firstRes = g.put(context.Background(), Report{Core: "core-first"}) })
			waitFor(t, "the first write", func() bool { return len(f.batchSizes()) == 1 })
			const n = 10
			results := make([]PutResult, n)
			panics := make([]any, n)
			for i := range n {
				wg.Go(func() {
					defer func() { panics[i] = recover() }()
					results[i] = g.put(context.Background(), Report{Core: fmt.Sprintf("core-%d", i)})
				})
			}
			waitFor(t, "every caller queued", func() bool { return g.queued() == n })
			close(first)
			wg.Wait()
			if firstRes != (PutResult{Stored: true}) {
				t.Errorf("first caller: %+v", firstRes)
			}
			npanics := 0
			for i := range n {
				if panics[i] != nil {
					npanics++ // the writer of the failing batch
					continue
				}
				if results[i].Err == nil {
					t.Errorf("caller %d: %+v, want the batch's error", i, results[i])
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tt.panic]; npanics != want {
				t.Errorf("%d callers panicked, want %d", npanics, want)
			}
			// The writer role was released: a new report is written.
			if res := g.put(context.Background(), Report{Core: "core-after"}); res != (PutResult{Stored: true}) {
				t.Errorf("after the failure: %+v", res)
			}
		})
	}
}

func TestGroupCommitCancel(t *testing.T) {
	tests := []struct {
		name string
		// cancel is the index of the queued caller whose context ends while
		// the first write is held; 0 is the one next in line to write.
		cancel int
	}{
		{"next writer cancelled before the role is handed on", 0},
		{"queued caller cancelled", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeBatch{seen: map[string]int{}}
			g := newGroupCommit(f, 500)
			first := make(chan struct{})
			f.before = func(n int, rs []Report) error {
				if n == 0 {
					<-first
				}
				return nil
			}
			var wg sync.WaitGroup
			wg.Go(func() { g.put(context.Background(), Report{Core: "core-first"}) })
			waitFor(t, "the first write", func() bool { return len(f.batchSizes()) == 1 })
			const n = 6
			results := make([]PutResult, n)
			ctx, cancel := context.WithCancel(context.Background())
			for i := range n {
				c := context.Background()
				if i == tt.cancel {
					c = ctx
				}
				wg.Go(func() { results[i] = g.put(c, Report{Core: fmt.Sprintf("core-%d", i)}) })
				waitFor(t, "the caller queued", func() bool { return g.queued() == i+1 })
			}
			cancel()
			waitFor(t, "the cancelled caller gone", func() bool { return g.queued() == n-1 })
			close(first)
			wg.Wait()
			for i, res := range results {
				if i == tt.cancel {
					if !errors.Is(res.Err, context.Canceled) {
						t.Errorf("cancelled caller: %+v, want context.Canceled", res)
					}
					continue
				}
				if res != (PutResult{Stored: true}) {
					t.Errorf("caller %d: %+v", i, res)
				}
			}
			if got := f.batchSizes(); fmt.Sprint(got) != "[1 5]" {
				t.Errorf("batch sizes %v, want [1 5]", got)
			}
			if f.seen[fmt.Sprintf("core-%d", tt.cancel)] != 0 {
				t.Error("the cancelled caller's report was written")
			}
		})
	}
}

// TestGroupCommitCancelledWriter: a caller handed the writer role whose
// context ends before it wakes still writes the queued reports.
func TestGroupCommitCancelledWriter(t *testing.T) {
	f := &fakeBatch{seen: map[string]int{}}
	g := newGroupCommit(f, 500)
	g.writing = true // a write under way, which will hand the role on
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var leadRes PutResult
	wg.Go(func() { leadRes = g.put(ctx, Report{Core: "core-lead"}) })
	waitFor(t, "the writer-to-be queued", func() bool { return g.queued() == 1 })
	const n = 4
	results := make([]PutResult, n)
	for i := range n {
		wg.Go(func() { results[i] = g.put(context.Background(), Report{Core: fmt.Sprintf("core-%d", i)}) })
	}
	waitFor(t, "every caller queued", func() bool { return g.queued() == n+1 })
	// The role is handed on (as finish does, but without the wake-up), then
	// the writer-to-be's context ends: it must write, not leave.
	g.mu.Lock()
	g.queue[0].lead = true
	g.mu.Unlock()
	cancel()
	wg.Wait()
	if leadRes != (PutResult{Stored: true}) {
		t.Errorf("writer-to-be: %+v, want its own result", leadRes)
	}
	for i, res := range results {
		if res != (PutResult{Stored: true}) {
			t.Errorf("caller %d: %+v", i, res)
		}
	}
	if got := f.batchSizes(); fmt.Sprint(got) != "[5]" {
		t.Errorf("batch sizes %v, want [5]", got)
	}
	if g.writing || g.queued() != 0 {
		t.Errorf("writing=%v, %d queued", g.writing, g.queued())
	}
}
