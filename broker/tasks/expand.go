package tasks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Two-stage tasks and items that finish later.
//
// A deployment task does not know its items when it is submitted: a first
// stage expands its targets (thing groups, Asset Library queries) into
// items. Its task is stored with no items and one job for ExpandBatch; the
// runner calls the processor's Expand for that job and adds the items and
// their batch jobs in one transaction (ExpandStore.AddItems).
//
// A deployment item is not done when its processor returns: it waits for
// the agent's report. ProcessItem returns ErrAwait to leave the item
// InProgress; the batch is then completed by CompleteIfDone, called by
// whoever later makes the item final.

// ExpandBatch is the batch number of the job that expands a two-stage
// task's targets into items.
const ExpandBatch = -1

// Expander is implemented by processors of two-stage tasks.
type Expander interface {
	// Expand returns the task's items (Seq and Batch are assigned by
	// Batches; Status is Waiting). Returning a *Failure ends the task as
	// Failure with its message; other errors are retried.
	Expand(ctx context.Context, t Task) (items []Item, batchSize int, err error)
}

// ExpandStore is the store side of two-stage tasks.
type ExpandStore interface {
	// CreateExpandingTask stores a task that has no items yet and enqueues
	// its ExpandBatch job, in one transaction.
	CreateExpandingTask(ctx context.Context, t Task) error
	// AddItems stores the items of an expanded task, sets batchesTotal and
	// enqueues one job per batch, in one transaction. It does nothing and
	// reports false when the task already has batches or has failed.
	AddItems(ctx context.Context, taskID string, items []Item, batchesTotal int, now time.Time) (bool, error)
	// FailTask makes a task Failure with message (sticky; an existing
	// message is kept).
	FailTask(ctx context.Context, id, message string, now time.Time) error
}

// Failure is returned by Expand when the task cannot go on; the task ends
// Failure with Message.
type Failure struct{ Message string }

func (f *Failure) Error() string { return f.Message }

// Fail returns a *Failure with a formatted message.
func Fail(format string, args ...any) error {
	return &Failure{Message: fmt.Sprintf(format, args...)}
}

// ErrAwait is returned by ProcessItem when the item has been started and
// now waits for an outside report. The processor must have saved the item
// (InProgress) before the report can arrive; the runner does not save it
// again, and does not complete the batch until every item is final.
var ErrAwait = errors.New("tasks: the item awaits an outside report")

func (r *Runner) expandStore() (ExpandStore, error) {
	es, ok := r.Store.(ExpandStore)
	if !ok {
		return nil, fmt.Errorf("tasks: the store %T cannot run two-stage tasks (no ExpandStore)", r.Store)
	}
	return es, nil
}

// expand runs the first stage of a two-stage task. It is idempotent: a
// task that already has batches (or has failed) is left alone.
func (r *Runner) expand(ctx context.Context, proc Processor, t Task) error {
	if t.BatchesTotal > 0 || t.Status == cdf.StatusFailure || t.Status == cdf.StatusSuccess {
		return nil
	}
	ex, ok := proc.(Expander)
	if !ok {
		return fmt.Errorf("task %s: the processor for kind %q cannot expand targets", t.ID, t.Kind)
	}
	es, err := r.expandStore()
	if err != nil {
		return err
	}
	items, size, err := ex.Expand(ctx, t)
	var fail *Failure
	if errors.As(err, &fail) {
		if err := es.FailTask(ctx, t.ID, fail.Message, r.now()); err != nil {
			return fmt.Errorf("fail task %s: %w", t.ID, err)
		}
		r.logger().Info("task failed at expansion", "task", t.ID, "kind", t.Kind, "reason", fail.Message)
		return nil
	}
	if err != nil {
		return fmt.Errorf("expand task %s: %w", t.ID, err)
	}
	if len(items) == 0 {
		if err := es.FailTask(ctx, t.ID, "the task's targets resolved to no items", r.now()); err != nil {
			return fmt.Errorf("fail task %s: %w", t.ID, err)
		}
		return nil
	}
	now := r.now()
	for i := range items {
		items[i].TaskID = t.ID
		if items[i].Status == "" {
			items[i].Status = cdf.StatusWaiting
		}
		if items[i].CreatedAt.IsZero() {
			items[i].CreatedAt = now
		}
	}
	total := Batches(items, size)
	added, err := es.AddItems(ctx, t.ID, items, total, now)
	if err != nil {
		return fmt.Errorf("add items of task %s: %w", t.ID, err)
	}
	r.logger().Info("task expanded", "task", t.ID, "kind", t.Kind, "items", len(items), "batches", total, "added", added)
	return nil
}

// CompleteIfDone completes a batch whose items are all final (after
// ErrAwait items got their reports): AfterBatch, then CompleteBatch. It
// reports whether the batch is complete. It is safe to call more than once
// and from several processes: CompleteBatch counts a batch once (AfterBatch
// may run again, so it must be idempotent for processors that await).
func (r *Runner) CompleteIfDone(ctx context.Context, ref BatchRef) (bool, error) {
	if ref.Batch == ExpandBatch {
		return false, nil
	}
	t, err := r.Store.GetTask(ctx, ref.TaskID)
	if err != nil {
		return false, fmt.Errorf("load task %s: %w", ref.TaskID, err)
	}
	proc, ok := r.Processors[t.Kind]
	if !ok {
		return false, fmt.Errorf("task %s: no processor for kind %q", t.ID, t.Kind)
	}
	list, err := r.Store.ListBatchItems(ctx, t.ID, ref.Batch)
	if err != nil {
		return false, fmt.Errorf("load batch %d of task %s: %w", ref.Batch, t.ID, err)
	}
	items := make([]*Item, len(list))
	for i := range list {
		if !list[i].Final() {
			return false, nil
		}
		items[i] = &list[i]
	}
	if err := r.finishBatch(ctx, proc, t, ref.Batch, items); err != nil {
		return false, err
	}
	return true, nil
}
