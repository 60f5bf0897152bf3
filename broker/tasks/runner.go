package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/broker/groupcommit"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Processor does the work of one kind of task.
type Processor interface {
	// ProcessItem works one item that is not final. It sets it.Status to
	// Success or Failure (with StatusMessage) for outcomes the user should
	// see, and returns an error only for transient trouble (database down),
	// in which case the batch is retried later. save persists it (status and
	// Progress) and must be called before each side effect that a crash must
	// not repeat. Items may be re-run after a crash: every step must be
	// idempotent by item name.
	ProcessItem(ctx context.Context, t Task, it *Item, save func(context.Context) error) error
	// AfterBatch runs once all items of a batch are final (for example to
	// associate the devices that succeeded with their core). It may turn
	// items into failures; changed items are saved by the runner.
	AfterBatch(ctx context.Context, t Task, items []*Item) error
}

// Runner runs batches of tasks with the processor for their kind.
type Runner struct {
	Store       Store
	Processors  map[Kind]Processor
	Concurrency int // items worked at once per batch; default 10
	Logger      *slog.Logger
	Now         func() time.Time

	savesOnce sync.Once
	// saves groups the item saves of concurrent items into one UpdateItems
	// when the store has it (nil: UpdateItem per save); see saveItem.
	saves *groupcommit.Group[Item, error]
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// RunBatch works one batch of a task to completion. It is safe to call again
// for the same batch (after a crash or retry): final items are skipped and
// the batch is counted once. For ExpandBatch it runs the first stage of a
// two-stage task. Items whose processor returned ErrAwait stay InProgress
// and the batch completes later (CompleteIfDone).
func (r *Runner) RunBatch(ctx context.Context, ref BatchRef) error {
	t, err := r.Store.GetTask(ctx, ref.TaskID)
	if err != nil {
		return fmt.Errorf("load task %s: %w", ref.TaskID, err)
	}
	proc, ok := r.Processors[t.Kind]
	if !ok {
		return fmt.Errorf("task %s: no processor for kind %q", t.ID, t.Kind)
	}
	if ref.Batch == ExpandBatch {
		return r.expand(ctx, proc, t)
	}
	if err := r.Store.StartTask(ctx, t.ID, r.now()); err != nil {
		return fmt.Errorf("start task %s: %w", t.ID, err)
	}
	items, err := r.loadBatch(ctx, t, ref)
	if err != nil {
		return err
	}
	if bp, ok := wholeBatch(proc, t); ok {
		err := r.runWholeBatch(ctx, bp, proc, t, ref, items)
		if !errors.Is(err, ErrItemByItem) || ctx.Err() != nil {
			return err
		}
		// Work the items one by one below, from what is stored now.
		r.logger().Warn("batch failed as a whole; working its items one by one", "task", t.ID, "batch", ref.Batch, "err", err)
		if items, err = r.loadBatch(ctx, t, ref); err != nil {
			return err
		}
	}

	conc := r.Concurrency
	if conc < 1 {
		conc = 10
	}
	sem := make(chan struct{}, conc)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		awaiting bool
	)
	for _, it := range items {
		if it.Final() {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			waits, err := r.processItem(ctx, proc, t, it)
			mu.Lock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if waits {
				awaiting = true
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr // the queue retries the batch; finished items are skipped then
	}
	if awaiting {
		// Reports may already have finished every awaited item.
		_, err := r.CompleteIfDone(ctx, ref)
		return err
	}
	return r.finishBatch(ctx, proc, t, ref.Batch, items)
}

// loadBatch returns the items of a batch as stored.
func (r *Runner) loadBatch(ctx context.Context, t Task, ref BatchRef) ([]*Item, error) {
	list, err := r.Store.ListBatchItems(ctx, t.ID, ref.Batch)
	if err != nil {
		return nil, fmt.Errorf("load batch %d of task %s: %w", ref.Batch, t.ID, err)
	}
	items := make([]*Item, len(list))
	for i := range list {
		items[i] = &list[i]
	}
	return items, nil
}

// finishBatch runs AfterBatch over the final items of a batch, saves what it
// changed and completes the batch.
func (r *Runner) finishBatch(ctx context.Context, proc Processor, t Task, batch int, items []*Item) error {
	before := make([]string, len(items))
	for i, it := range items {
		before[i] = it.Status + "\x00" + it.StatusMessage
	}
	if err := proc.AfterBatch(ctx, t, items); err != nil {
		return fmt.Errorf("task %s batch %d: %w", t.ID, batch, err)
	}
	failed := false
	for i, it := range items {
		if it.Status+"\x00"+it.StatusMessage != before[i] {
			it.UpdatedAt = r.now()
			if err := r.Store.UpdateItem(ctx, *it); err != nil {
				return fmt.Errorf("save item %s of task %s: %w", it.Name, t.ID, err)
			}
		}
		if it.Status == cdf.StatusFailure {
			failed = true
		}
	}
	done, err := r.Store.CompleteBatch(ctx, t.ID, batch, failed, "", r.now())
	if err != nil {
		return fmt.Errorf("complete batch %d of task %s: %w", batch, t.ID, err)
	}
	r.logger().Info("task batch done", "task", t.ID, "kind", t.Kind, "batch", batch,
		"batchesComplete", done.BatchesComplete, "batchesTotal", done.BatchesTotal, "status", done.Status)
	return nil
}

// processItem works one item; awaits reports whether the processor left it
// waiting for an outside report (ErrAwait).
func (r *Runner) processItem(ctx context.Context, proc Processor, t Task, it *Item) (awaits bool, err error) {
	save := func(ctx context.Context) error {
		it.UpdatedAt = r.now()
		return r.saveItem(ctx, *it)
	}
	if it.Status == cdf.StatusWaiting || it.Status == "" {
		it.Status = cdf.StatusInProgress
		if err := save(ctx); err != nil {
			return false, fmt.Errorf("save item %s of task %s: %w", it.Name, t.ID, err)
		}
	}
	if err := proc.ProcessItem(ctx, t, it, save); err != nil {
		if errors.Is(err, ErrAwait) {
			return true, nil // the processor saved it; a report finishes it
		}
		return false, fmt.Errorf("item %s of task %s: %w", it.Name, t.ID, err)
	}
	if !it.Final() {
		return false, fmt.Errorf("item %s of task %s: processor left it %s", it.Name, t.ID, it.Status)
	}
	if err := save(ctx); err != nil {
		return false, fmt.Errorf("save item %s of task %s: %w", it.Name, t.ID, err)
	}
	return false, nil
}

// saveGroupMax bounds the item saves written by one UpdateItems.
const saveGroupMax = 64

// saveItem saves one item. When the store saves many items at once
// (ItemsUpdater), the saves of the items being worked at the same moment
// (up to Concurrency per batch, on every worker) share one statement and
// one commit: a core task saves each item three times, and one commit per
// save was a tenth of the broker's CPU in bulk provisioning. Each caller
// still returns only once its item is stored. A failed group (a missing
// item fails UpdateItems as a whole) is saved again item by item, so each
// caller gets its own item's error.
func (r *Runner) saveItem(ctx context.Context, it Item) error {
	r.savesOnce.Do(func() {
		u, ok := r.Store.(ItemsUpdater)
		if !ok {
			return
		}
		r.saves = groupcommit.New(func(ctx context.Context, items []Item) ([]error, error) {
			errs := make([]error, len(items))
			if len(items) > 1 {
				if err := u.UpdateItems(ctx, items); err == nil {
					return errs, nil
				}
			}
			for i, it := range items {
				errs[i] = r.Store.UpdateItem(ctx, it)
			}
			return errs, nil
		}, saveGroupMax)
	})
	if r.saves == nil {
		return r.Store.UpdateItem(ctx, it)
	}
	err, gerr := r.saves.Put(ctx, it)
	if gerr != nil {
		return gerr
	}
	return err
}

// FailBatch marks every unfinished item of a batch Failure with message and
// completes the batch; the queue calls it when a batch has exhausted its
// retries, so no task is ever left InProgress.
func (r *Runner) FailBatch(ctx context.Context, ref BatchRef, message string) error {
	if ref.Batch == ExpandBatch {
		es, err := r.expandStore()
		if err != nil {
			return err
		}
		return es.FailTask(ctx, ref.TaskID, message, r.now())
	}
	list, err := r.Store.ListBatchItems(ctx, ref.TaskID, ref.Batch)
	if err != nil {
		return fmt.Errorf("load batch %d of task %s: %w", ref.Batch, ref.TaskID, err)
	}
	for _, it := range list {
		if it.Final() {
			continue
		}
		it.Status, it.StatusMessage, it.UpdatedAt = cdf.StatusFailure, message, r.now()
		if err := r.Store.UpdateItem(ctx, it); err != nil {
			return fmt.Errorf("save item %s of task %s: %w", it.Name, ref.TaskID, err)
		}
	}
	_, err = r.Store.CompleteBatch(ctx, ref.TaskID, ref.Batch, true, message, r.now())
	return err
}
