// Package groupcommit stores items written one at a time by many concurrent
// callers in batches, by leader/follower group commit, so that a thousand
// agents' messages cost a few transactions (a few commits, a few fsyncs)
// instead of one each, while every caller still returns only once its own
// item is written.
//
// There is no goroutine of its own: a caller queues its item; if no write is
// under way it becomes the writer: it takes up to max queued items (its own
// first), writes them in one call, hands each waiting caller its result,
// and — if items were queued meanwhile — makes the first of their callers
// the next writer. So every caller returns once its own item is written,
// and none writes for others more than once.
package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// WriteFunc writes a batch of items in one call (one transaction) and
// returns one result per item, in order. A non-nil error applies to every
// item of the batch. Its context does not end when the writing caller's
// does (the other callers' items are in the batch too), so WriteFunc
// bounds its own duration.
type WriteFunc[T, R any] func(ctx context.Context, items []T) ([]R, error)

// Group stores items by group commit through its WriteFunc. Its zero value
// is not usable; build one with New.
//
// Invariant (under mu): writing is false only when queue is empty and no
// write is under way; while writing, exactly one caller holds the writer
// role (it is in a write, or it is queue[0] with lead set).
type Group[T, R any] struct {
	write WriteFunc[T, R]
	max   int

	mu      sync.Mutex
	queue   []*waiter[T, R]
	writing bool
}

// waiter is one caller's item and, once written, its result. Its fields
// after item are guarded by Group.mu.
type waiter[T, R any] struct {
	item  T
	wake  chan struct{} // buffered 1: done or lead was set
	taken bool          // in a batch being written (no longer in queue)
	done  bool          // res and err hold the result
	lead  bool          // handed the writer role
	res   R
	err   error
}

// New returns a Group that writes at most maxItems items per call of write
// (maxItems < 1 is taken as 1), so one transaction stays short and the writer
// role moves on.
func New[T, R any](write WriteFunc[T, R], maxItems int) *Group[T, R] {
	return &Group[T, R]{write: write, max: max(1, maxItems)}
}

// Put stores item and returns its result once it is written. If ctx ends
// first, Put returns ctx's error, unless the caller holds the writer role:
// then it writes first, so that the items of the callers queued behind it
// are not left without a writer. An item whose caller left before it was
// taken into a batch is not written; one already in a batch is.
func (g *Group[T, R]) Put(ctx context.Context, item T) (R, error) {
	w := &waiter[T, R]{item: item, wake: make(chan struct{}, 1)}
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
			return w.res, w.err
		}
		if lead {
			g.writeBatch(ctx)
			return w.res, w.err // w was first in the queue, so in this batch
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			switch state := g.abandon(w); state {
			case abandonDone:
				return w.res, w.err
			case abandonLead:
				g.writeBatch(ctx)
				return w.res, w.err
			}
			var zero R
			return zero, fmt.Errorf("wait for the group commit: %w", ctx.Err())
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
func (g *Group[T, R]) abandon(w *waiter[T, R]) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case w.done:
		return abandonDone
	case w.lead:
		return abandonLead
	case w.taken:
		return abandonGone
	}
	for i, q := range g.queue {
		if q == w {
			g.queue = append(g.queue[:i:i], g.queue[i+1:]...)
			break
		}
	}
	return abandonGone
}

// writeBatch is run by the caller holding the writer role: it writes one
// batch from the front of the queue, hands out the results and passes the
// role on (or ends it when the queue is empty).
func (g *Group[T, R]) writeBatch(ctx context.Context) {
	g.mu.Lock()
	n := min(len(g.queue), g.max)
	batch := make([]*waiter[T, R], n)
	copy(batch, g.queue)
	g.queue = append([]*waiter[T, R](nil), g.queue[n:]...)
	items := make([]T, n)
	for i, w := range batch {
		w.taken = true
		items[i] = w.item
	}
	g.mu.Unlock()

	// Deferred so that a panicking WriteFunc still hands out results (an
	// error) and passes the writer role on; the panic goes on up.
	var results []R
	err := errors.New("the group commit's write did not finish")
	defer func() { g.finish(batch, results, err) }()
	results, err = g.call(ctx, items)
}

// call runs the WriteFunc on a context that does not end with the writing
// caller's ctx (its values are kept) and checks it returned one result per
// item.
func (g *Group[T, R]) call(ctx context.Context, items []T) ([]R, error) {
	results, err := g.write(context.WithoutCancel(ctx), items)
	if err != nil {
		return nil, err
	}
	if len(results) != len(items) {
		return nil, fmt.Errorf("write %d items: %d results returned", len(items), len(results))
	}
	return results, nil
}

// finish hands each caller of batch its result and passes the writer role
// to the first queued caller, or ends it when none is queued.
func (g *Group[T, R]) finish(batch []*waiter[T, R], results []R, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, w := range batch {
		if err != nil {
			w.err = err
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

// signal wakes the waiter of c without blocking (c is buffered; one pending
// wake-up is enough, since the waiter rereads its state under the lock).
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
