package tasks

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

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
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// RunBatch works one batch of a task to completion. It is safe to call again
// for the same batch (after a crash or retry): final items are skipped and
// the batch is counted once.
func (r *Runner) RunBatch(ctx context.Context, ref BatchRef) error {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t, err := r.Store.GetTask(ctx, ref.TaskID)
	if err != nil {
		return fmt.Errorf("load task %s: %w", ref.TaskID, err)
	}
	proc, ok := r.Processors[t.Kind]
	if !ok {
		return fmt.Errorf("task %s: no processor for kind %q", t.ID, t.Kind)
	}
	if err := r.Store.StartTask(ctx, t.ID, r.now()); err != nil {
		return fmt.Errorf("start task %s: %w", t.ID, err)
	}
	list, err := r.Store.ListBatchItems(ctx, t.ID, ref.Batch)
	if err != nil {
		return fmt.Errorf("load batch %d of task %s: %w", ref.Batch, t.ID, err)
	}
	items := make([]*Item, len(list))
	for i := range list {
		items[i] = &list[i]
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
			if err := r.processItem(ctx, proc, t, it); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr // the queue retries the batch; finished items are skipped then
	}

	before := make([]string, len(items))
	for i, it := range items {
		before[i] = it.Status + "\x00" + it.StatusMessage
	}
	if err := proc.AfterBatch(ctx, t, items); err != nil {
		return fmt.Errorf("task %s batch %d: %w", t.ID, ref.Batch, err)
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
	done, err := r.Store.CompleteBatch(ctx, t.ID, ref.Batch, failed, "", r.now())
	if err != nil {
		return fmt.Errorf("complete batch %d of task %s: %w", ref.Batch, t.ID, err)
	}
	log.Info("task batch done", "task", t.ID, "kind", t.Kind, "batch", ref.Batch,
		"batchesComplete", done.BatchesComplete, "batchesTotal", done.BatchesTotal, "status", done.Status)
	return nil
}

func (r *Runner) processItem(ctx context.Context, proc Processor, t Task, it *Item) error {
	save := func(ctx context.Context) error {
		it.UpdatedAt = r.now()
		return r.Store.UpdateItem(ctx, *it)
	}
	if it.Status == cdf.StatusWaiting || it.Status == "" {
		it.Status = cdf.StatusInProgress
		if err := save(ctx); err != nil {
			return fmt.Errorf("save item %s of task %s: %w", it.Name, t.ID, err)
		}
	}
	if err := proc.ProcessItem(ctx, t, it, save); err != nil {
		return fmt.Errorf("item %s of task %s: %w", it.Name, t.ID, err)
	}
	if !it.Final() {
		return fmt.Errorf("item %s of task %s: processor left it %s", it.Name, t.ID, it.Status)
	}
	if err := save(ctx); err != nil {
		return fmt.Errorf("save item %s of task %s: %w", it.Name, t.ID, err)
	}
	return nil
}

// FailBatch marks every unfinished item of a batch Failure with message and
// completes the batch; the queue calls it when a batch has exhausted its
// retries, so no task is ever left InProgress.
func (r *Runner) FailBatch(ctx context.Context, ref BatchRef, message string) error {
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
