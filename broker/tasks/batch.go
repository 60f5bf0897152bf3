package tasks

import (
	"context"
	"errors"
	"fmt"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Whole-batch processing.
//
// ProcessItem works one item at a time, so every per-item step is its own
// database round trip. A processor whose per-item work is mostly
// bookkeeping (deployments: a few rows per core, then one message) does far
// less work when it sees the whole batch at once: the per-task steps run
// once and the per-item rows are written by a few set-based statements.
// Such a processor implements BatchProcessor; RunBatch then hands it every
// item of the batch that is not final, in one call.

// BatchProcessor is implemented by processors that work a whole batch at
// once. RunBatch uses it instead of ProcessItem when present.
type BatchProcessor interface {
	// ProcessBatch works the items of one batch that are not final (in
	// request order; the runner has already saved them InProgress). For
	// each item it sets Status to Success or Failure (with StatusMessage),
	// or leaves it InProgress when it now waits for an outside report (as
	// ErrAwait does for ProcessItem): such an item must have been saved
	// with save before the report can arrive. The runner saves the final
	// items afterwards. save persists the given items (status and
	// Progress) in one transaction and must be called before each side
	// effect that a crash must not repeat. An error means transient
	// trouble: the batch is retried and every step must be idempotent.
	ProcessBatch(ctx context.Context, t Task, items []*Item, save func(context.Context, []*Item) error) error
}

// ErrItemByItem, wrapped in ProcessBatch's error, asks the runner to work
// the batch's items one by one with ProcessItem right away, from what is
// stored (a processor whose batch transaction failed as a whole: one
// item's trouble then does not hold up the others).
var ErrItemByItem = errors.New("work the batch item by item")

// BatchChooser is implemented by BatchProcessors that work only some tasks
// whole-batch (core tasks: Create, not Delete); RunBatch works the other
// tasks' items one by one with ProcessItem.
type BatchChooser interface {
	WholeBatch(t Task) bool
}

// wholeBatch returns proc as a BatchProcessor when it works t whole-batch.
func wholeBatch(proc Processor, t Task) (BatchProcessor, bool) {
	bp, ok := proc.(BatchProcessor)
	if !ok {
		return nil, false
	}
	if c, ok := proc.(BatchChooser); ok && !c.WholeBatch(t) {
		return nil, false
	}
	return bp, true
}

// ItemsUpdater is implemented by stores that save many items in one
// transaction; the runner falls back to UpdateItem per item without it.
type ItemsUpdater interface {
	// UpdateItems saves the status, message, progress and updated time of
	// every item, all or none (errkind.NotFound if an item is missing).
	UpdateItems(ctx context.Context, items []Item) error
}

// saveItems stamps and saves items, in one transaction when the store can.
func (r *Runner) saveItems(ctx context.Context, items []*Item) error {
	if len(items) == 0 {
		return nil
	}
	now := r.now()
	list := make([]Item, len(items))
	for i, it := range items {
		it.UpdatedAt = now
		list[i] = *it
	}
	if u, ok := r.Store.(ItemsUpdater); ok {
		return u.UpdateItems(ctx, list)
	}
	for _, it := range list {
		if err := r.Store.UpdateItem(ctx, it); err != nil {
			return err
		}
	}
	return nil
}

// runWholeBatch works the open items of a batch through a BatchProcessor
// and completes the batch, or leaves it to CompleteIfDone when items await
// reports.
func (r *Runner) runWholeBatch(ctx context.Context, bp BatchProcessor, proc Processor, t Task, ref BatchRef, items []*Item) error {
	var open, starting []*Item
	for _, it := range items {
		if it.Final() {
			continue
		}
		open = append(open, it)
		if it.Status == cdf.StatusWaiting || it.Status == "" {
			it.Status = cdf.StatusInProgress
			starting = append(starting, it)
		}
	}
	if err := r.saveItems(ctx, starting); err != nil {
		return fmt.Errorf("start items of batch %d of task %s: %w", ref.Batch, t.ID, err)
	}
	awaiting := false
	if len(open) > 0 {
		save := func(ctx context.Context, list []*Item) error { return r.saveItems(ctx, list) }
		if err := bp.ProcessBatch(ctx, t, open, save); err != nil {
			return fmt.Errorf("batch %d of task %s: %w", ref.Batch, t.ID, err)
		}
		var final []*Item
		for _, it := range open {
			switch {
			case it.Final():
				final = append(final, it)
			case it.Status == cdf.StatusInProgress:
				awaiting = true // saved by the processor; a report finishes it
			default:
				return fmt.Errorf("item %s of task %s: processor left it %s", it.Name, t.ID, it.Status)
			}
		}
		if err := r.saveItems(ctx, final); err != nil {
			return fmt.Errorf("save items of batch %d of task %s: %w", ref.Batch, t.ID, err)
		}
	}
	if awaiting {
		// Reports may already have finished every awaited item.
		_, err := r.CompleteIfDone(ctx, ref)
		return err
	}
	return r.finishBatch(ctx, proc, t, ref.Batch, items)
}
