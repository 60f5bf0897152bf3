package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// item is what the tests' callers put: a key and a number.
type item struct {
	Key string
	N   int
}

// result is fakeWriter's answer for one item.
type result struct {
	Even     bool
	NotFound bool
}

// fakeWriter records the size of every batch and answers each item from its
// content: keys named ghost* are NotFound, Even is N%2 == 0. before runs at
// the start of each call (n counts from 0).
type fakeWriter struct {
	mu     sync.Mutex
	sizes  []int
	seen   map[string]int // key → times written
	before func(n int, items []item) error
}

func newFake() *fakeWriter { return &fakeWriter{seen: map[string]int{}} }

func (f *fakeWriter) write(ctx context.Context, items []item) ([]result, error) {
	f.mu.Lock()
	n := len(f.sizes)
	f.sizes = append(f.sizes, len(items))
	for _, it := range items {
		f.seen[it.Key]++
	}
	f.mu.Unlock()
	if f.before != nil {
		if err := f.before(n, items); err != nil {
			return nil, err
		}
	}
	out := make([]result, len(items))
	for i, it := range items {
		out[i] = want(it)
	}
	return out, nil
}

func (f *fakeWriter) batchSizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.sizes...)
}

func (f *fakeWriter) written(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[key]
}

// want is what fakeWriter answers for it.
func want(it item) result {
	if strings.HasPrefix(it.Key, "ghost") {
		return result{NotFound: true}
	}
	return result{Even: it.N%2 == 0}
}

// queued reports how many callers wait in g's queue.
func (g *Group[T, R]) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// isWriting reports whether g has a writer.
func (g *Group[T, R]) isWriting() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.writing
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
		{"max below one is one", 3, 0, []int{1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			g := New(f.write, tt.max)
			first := make(chan struct{})
			f.before = func(n int, _ []item) error {
				if n == 0 {
					<-first
				}
				return nil
			}
			items := make([]item, tt.callers)
			for i := range items {
				key := fmt.Sprintf("key-%03d", i)
				if i%7 == 3 {
					key = fmt.Sprintf("ghost-%03d", i)
				}
				items[i] = item{Key: key, N: i}
			}
			results := make([]result, tt.callers)
			errs := make([]error, tt.callers)
			var wg sync.WaitGroup
			wg.Go(func() { results[0], errs[0] = g.Put(context.Background(), items[0]) })
			waitFor(t, "the first write", func() bool { return len(f.batchSizes()) == 1 })
			for i := 1; i < tt.callers; i++ {
				wg.Go(func() { results[i], errs[i] = g.Put(context.Background(), items[i]) })
			}
			waitFor(t, "every caller queued", func() bool { return g.queued() == tt.callers-1 })
			close(first)
			wg.Wait()

			for i, it := range items {
				if errs[i] != nil || results[i] != want(it) {
					t.Errorf("caller %d (%s): %+v, %v; want %+v", i, it.Key, results[i], errs[i], want(it))
				}
				if n := f.written(it.Key); n != 1 {
					t.Errorf("%s written %d times", it.Key, n)
				}
			}
			if got := f.batchSizes(); fmt.Sprint(got) != fmt.Sprint(tt.wantSizes) {
				t.Errorf("batch sizes %v, want %v", got, tt.wantSizes)
			}
			if g.isWriting() || g.queued() != 0 {
				t.Errorf("after the last write: writing=%v, %d queued", g.isWriting(), g.queued())
			}
		})
	}
}

// TestGroupCommitStress runs many callers against a writer that takes a
// little time per batch, so writers come and go while callers arrive.
func TestGroupCommitStress(t *testing.T) {
	f := newFake()
	f.before = func(int, []item) error {
		time.Sleep(200 * time.Microsecond)
		return nil
	}
	g := New(f.write, 16)
	const callers, rounds = 50, 40
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for c := range callers {
		wg.Go(func() {
			for i := range rounds {
				it := item{Key: fmt.Sprintf("key-%02d", c), N: c + i}
				got, err := g.Put(context.Background(), it)
				if err != nil || got != want(it) {
					errs <- fmt.Errorf("caller %d round %d: %+v, %v; want %+v", c, i, got, err, want(it))
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
		t.Errorf("%d items written, want %d", total, callers*rounds)
	}
	t.Logf("%d items in %d batches", total, len(f.batchSizes()))
}

func TestGroupCommitWriteFailure(t *testing.T) {
	tests := []struct {
		name       string
		write      func(f *fakeWriter) WriteFunc[item, result] // nil: f.write
		fail       func() error                                // the second batch's failure
		panic      bool
		wantErrSub string
	}{
		{name: "error", fail: func() error { return errors.New("database down") }, wantErrSub: "database down"},
		{name: "panic", panic: true, wantErrSub: "did not finish"},
		{
			name: "too few results",
			write: func(f *fakeWriter) WriteFunc[item, result] {
				return func(ctx context.Context, items []item) ([]result, error) {
					out, err := f.write(ctx, items)
					if len(items) > 1 {
						out = out[1:]
					}
					return out, err
				}
			},
			fail:       func() error { return nil },
			wantErrSub: "results returned",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			write := f.write
			if tt.write != nil {
				write = tt.write(f)
			}
			g := New(write, 500)
			first := make(chan struct{})
			f.before = func(n int, _ []item) error {
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
			var firstRes result
			var firstErr error
			wg.Go(func() { firstRes, firstErr = g.Put(context.Background(), item{Key: "key-first"}) })
			waitFor(t, "the first write", func() bool { return len(f.batchSizes()) == 1 })
			const n = 10
			errs := make([]error, n)
			panics := make([]any, n)
			for i := range n {
				wg.Go(func() {
					defer func() { panics[i] = recover() }()
					_, errs[i] = g.Put(context.Background(), item{Key: fmt.Sprintf("key-%d", i)})
				})
			}
			waitFor(t, "every caller queued", func() bool { return g.queued() == n })
			close(first)
			wg.Wait()
			if firstErr != nil || firstRes != (result{Even: true}) {
				t.Errorf("first caller: %+v, %v", firstRes, firstErr)
			}
			npanics := 0
			for i := range n {
				if panics[i] != nil {
					npanics++ // the writer of the failing batch
					continue
				}
				if errs[i] == nil || !strings.Contains(errs[i].Error(), tt.wantErrSub) {
					t.Errorf("caller %d: %v, want the batch's error (%q)", i, errs[i], tt.wantErrSub)
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tt.panic]; npanics != want {
				t.Errorf("%d callers panicked, want %d", npanics, want)
			}
			// The writer role was released: a new item is written.
			if res, err := g.Put(context.Background(), item{Key: "key-after"}); err != nil || res != (result{Even: true}) {
				t.Errorf("after the failure: %+v, %v", res, err)
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
			f := newFake()
			g := New(f.write, 500)
			first := make(chan struct{})
			f.before = func(n int, _ []item) error {
				if n == 0 {
					<-first
				}
				return nil
			}
			var wg sync.WaitGroup
			wg.Go(func() { _, _ = g.Put(context.Background(), item{Key: "key-first"}) })
			waitFor(t, "the first write", func() bool { return len(f.batchSizes()) == 1 })
			const n = 6
			results := make([]result, n)
			errs := make([]error, n)
			ctx, cancel := context.WithCancel(context.Background())
			for i := range n {
				c := context.Background()
				if i == tt.cancel {
					c = ctx
				}
				wg.Go(func() { results[i], errs[i] = g.Put(c, item{Key: fmt.Sprintf("key-%d", i)}) })
				waitFor(t, "the caller queued", func() bool { return g.queued() == i+1 })
			}
			cancel()
			waitFor(t, "the cancelled caller gone", func() bool { return g.queued() == n-1 })
			close(first)
			wg.Wait()
			for i := range n {
				if i == tt.cancel {
					if !errors.Is(errs[i], context.Canceled) {
						t.Errorf("cancelled caller: %v, want context.Canceled", errs[i])
					}
					continue
				}
				if errs[i] != nil || results[i] != (result{Even: true}) {
					t.Errorf("caller %d: %+v, %v", i, results[i], errs[i])
				}
			}
			if got := f.batchSizes(); fmt.Sprint(got) != "[1 5]" {
				t.Errorf("batch sizes %v, want [1 5]", got)
			}
			if f.written(fmt.Sprintf("key-%d", tt.cancel)) != 0 {
				t.Error("the cancelled caller's item was written")
			}
		})
	}
}

// TestGroupCommitCancelledWriter: a caller handed the writer role whose
// context ends before it wakes still writes the queued items, and the write
// does not see the cancellation.
func TestGroupCommitCancelledWriter(t *testing.T) {
	f := newFake()
	var writeCtxErr error
	g := New(func(ctx context.Context, items []item) ([]result, error) {
		writeCtxErr = ctx.Err()
		return f.write(ctx, items)
	}, 500)
	g.writing = true // a write under way, which will hand the role on
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var leadRes result
	var leadErr error
	wg.Go(func() { leadRes, leadErr = g.Put(ctx, item{Key: "key-lead"}) })
	waitFor(t, "the writer-to-be queued", func() bool { return g.queued() == 1 })
	const n = 4
	results := make([]result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = g.Put(context.Background(), item{Key: fmt.Sprintf("key-%d", i)}) })
	}
	waitFor(t, "every caller queued", func() bool { return g.queued() == n+1 })
	// The role is handed on (as finish does, but without the wake-up), then
	// the writer-to-be's context ends: it must write, not leave.
	g.mu.Lock()
	g.queue[0].lead = true
	g.mu.Unlock()
	cancel()
	wg.Wait()
	if leadErr != nil || leadRes != (result{Even: true}) {
		t.Errorf("writer-to-be: %+v, %v; want its own result", leadRes, leadErr)
	}
	for i := range n {
		if errs[i] != nil || results[i] != (result{Even: true}) {
			t.Errorf("caller %d: %+v, %v", i, results[i], errs[i])
		}
	}
	if writeCtxErr != nil {
		t.Errorf("the write's context ended: %v", writeCtxErr)
	}
	if got := f.batchSizes(); fmt.Sprint(got) != "[5]" {
		t.Errorf("batch sizes %v, want [5]", got)
	}
	if g.isWriting() || g.queued() != 0 {
		t.Errorf("writing=%v, %d queued", g.isWriting(), g.queued())
	}
}
