package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// BatchStore is what a Store may add so that concurrent health reports are
// stored by group commit: with a thousand agents each having a report in
// flight, one transaction for many reports instead of one commit (one WAL
// flush) each. The Service uses it when its Store has it.
type BatchStore interface {
	// PutReports stores each report as PutReport would, in one transaction,
	// and returns one result per report, in order. Reports of a core that
	// does not exist get errkind.NotFound in their result without failing
	// the others. When one core has several reports in rs, only the one
	// with the latest ReportedAt (the last of those in rs on a tie) can be
	// stored; the others get Stored false. A non-nil error means nothing
	// was stored and applies to every report.
	PutReports(ctx context.Context, rs []Report) ([]PutResult, error)
}

// PutResult is one report's outcome in PutReports: what PutReport returns.
type PutResult struct {
	Stored bool
	Sync   bool
	Err    error
}

// Group commit limits.
const (
	// MaxBatch bounds the reports written in one transaction, so one
	// transaction stays short and the writer role moves on.
	MaxBatch = 500
	// WriteTimeout bounds one batch's write. The write does not end when
	// the writing caller's context does: the other callers' reports are in
	// it too.
	WriteTimeout = 10 * time.Second
)

// groupCommit stores reports by leader/follower group commit, without a
// goroutine of its own. A caller queues its report; if no write is under
// way it becomes the writer: it takes up to MaxBatch queued reports (its
// own first), writes them in one PutReports call, hands each waiting caller
// its result, and — if reports were queued meanwhile — makes the first of
// their callers the next writer. So every caller returns once its own
// report is written, and none writes for others more than once.
//
// Invariant (under mu): writing is false only when queue is empty and no
// write is under way; while writing, exactly one caller holds the writer
// role (it is in a write, or it is queue[0] with lead set).
type groupCommit struct {
	store BatchStore
	max   int

	mu      sync.Mutex
	queue   []*waiter
	writing bool
}

// waiter is one caller's report and, once written, its result. Its fields
// after r are guarded by groupCommit.mu.
type waiter struct {
	r     Report
	wake  chan struct{} // buffered 1: done or lead was set
	taken bool          // in a batch being written (no longer in queue)
	done  bool          // res holds the result
	lead  bool          // handed the writer role
	res   PutResult
}

func newGroupCommit(store BatchStore, max int) *groupCommit {
	return &groupCommit{store: store, max: max}
}

// put stores r and returns its result once it is written. If ctx ends
// first, put returns ctx's error, unless the caller holds the writer role:
// then it writes first, so that the reports of the callers queued behind
// it are not left without a writer.
func (g *groupCommit) put(ctx context.Context, r Report) PutResult {
	w := &waiter{r: r, wake: make(chan struct{}, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, w)
	if !g.writing {
		g.writing = true
		w.lead = true
	}
	g.mu.Unlock()
	for {
		g.mu.Lock()
		done, lead := w.done, w.lead
		g.mu.Unlock()
		if done {
			return w.res
		}
		if lead {
			g.write(ctx)
			return w.res // w was first in the queue, so in this batch
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			switch res, state := g.abandon(w); state {
			case abandonDone:
				return res
			case abandonLead:
				g.write(ctx)
				return w.res
			}
			return PutResult{Err: fmt.Errorf("wait for the health report's group commit: %w", ctx.Err())}
		}
	}
}

// What abandon found.
const (
	abandonGone = iota // the caller may leave without its result
	abandonDone        // the result is there
	abandonLead        // the caller holds the writer role and must write
)

// abandon is called when w's caller stops waiting. It takes w out of the
// queue, unless w's result is already there, w is in a batch being written
// (that write finishes without its caller) or w holds the writer role.
func (g *groupCommit) abandon(w *waiter) (PutResult, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case w.done:
		return w.res, abandonDone
	case w.lead:
		return PutResult{}, abandonLead
	case w.taken:
		return PutResult{}, abandonGone
	}
	for i, q := range g.queue {
		if q == w {
			g.queue = append(g.queue[:i:i], g.queue[i+1:]...)
			break
		}
	}
	return PutResult{}, abandonGone
}

// write is run by the caller holding the writer role: it writes one batch
// from the front of the queue, hands out the results and passes the role
// on (or ends it when the queue is empty).
func (g *groupCommit) write(ctx context.Context) {
	g.mu.Lock()
	n := min(len(g.queue), g.max)
	batch := make([]*waiter, n)
	copy(batch, g.queue)
	g.queue = append([]*waiter(nil), g.queue[n:]...)
	reports := make([]Report, n)
	for i, w := range batch {
		w.taken = true
		reports[i] = w.r
	}
	g.mu.Unlock()

	// Deferred so that a panicking store still hands out results (an
	// error) and passes the writer role on; the panic goes on up.
	var results []PutResult
	err := errors.New("the health reports' write did not finish")
	defer func() { g.finish(batch, results, err) }()
	results, err = g.putReports(ctx, reports)
}

// finish hands each caller of batch its result and passes the writer role
// to the first queued caller, or ends it when none is queued.
func (g *groupCommit) finish(batch []*waiter, results []PutResult, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, w := range batch {
		if err != nil {
			w.res = PutResult{Err: err}
		} else {
			w.res = results[i]
		}
		w.done = true
		signal(w.wake)
	}
	if len(g.queue) == 0 {
		g.writing = false
		return
	}
	next := g.queue[0]
	next.lead = true
	signal(next.wake)
}

// putReports writes one batch under WriteTimeout, whether or not the
// writing caller's ctx has ended (its values are kept).
func (g *groupCommit) putReports(ctx context.Context, reports []Report) ([]PutResult, error) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), WriteTimeout)
	defer cancel()
	results, err := g.store.PutReports(wctx, reports)
	if err != nil {
		return nil, fmt.Errorf("store %d health reports: %w", len(reports), err)
	}
	if len(results) != len(reports) {
		return nil, fmt.Errorf("store %d health reports: the store returned %d results", len(reports), len(results))
	}
	return results, nil
}

// signal wakes the waiter of c without blocking (c is buffered; one pending
// wake-up is enough, since the waiter rereads its state under the lock).
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
