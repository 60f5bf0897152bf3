// Package jobs runs task batches durably on river, a job queue that lives in
// the broker's own database: a batch is enqueued in the transaction that
// creates its task, survives a crash, is retried with backoff, and after its
// last attempt fails its items instead of vanishing, so every task ends
// Success or Failure.
//
// The embedded SQLite mode (riversqlite) is implemented. PostgreSQL
// (riverpgxv5) can be added beside it: only New's driver choice, the
// transaction type of EnqueueTx and RecoverAbandoned (which is for the
// single-process SQLite mode only) depend on the engine.
package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
)

// Defaults of Config.
const (
	DefaultMaxAttempts  = 8
	DefaultWorkers      = 4
	DefaultJobTimeout   = 5 * time.Minute
	DefaultPollInterval = time.Second
)

// Config holds the queue's dependencies and limits.
type Config struct {
	// DB is the broker's SQLite pool (sqlstore.DB.SQL()); river keeps its
	// tables there so jobs commit with the tasks they work on.
	DB     *sql.DB
	Runner *tasks.Runner
	Logger *slog.Logger
	// MaxAttempts is how often a batch is tried before its unfinished
	// items fail (default 8).
	MaxAttempts int
	// Workers is how many batches run at once (default 4).
	Workers int
	// JobTimeout bounds one attempt of one batch (default 5m).
	JobTimeout time.Duration
	// RetryPolicy decides when a failed attempt is retried; nil means
	// river's exponential backoff (tests use a fast one).
	RetryPolicy river.ClientRetryPolicy
	// PollInterval is how often idle workers look for new jobs (SQLite has
	// no notifications); default 1s.
	PollInterval time.Duration
}

// BatchArgs is the job that runs one batch of one task.
type BatchArgs struct {
	TaskID string `json:"taskId"`
	Batch  int    `json:"batch"`
}

// Kind is river's name for the job type; stored in river_job.kind.
func (BatchArgs) Kind() string { return "task_batch" }

// Queue is the durable job queue of task batches.
type Queue struct {
	db     *sql.DB
	driver *riversqlite.Driver
	client *river.Client[*sql.Tx]
	runner *tasks.Runner
	log    *slog.Logger
}

// New builds the queue. Call Migrate before the first EnqueueTx and Start
// to begin working.
func New(cfg Config) (*Queue, error) {
	if cfg.DB == nil {
		return nil, errors.New("jobs: Config.DB is required")
	}
	if cfg.Runner == nil {
		return nil, errors.New("jobs: Config.Runner is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxAttempts < 1 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Workers < 1 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.JobTimeout <= 0 {
		cfg.JobTimeout = DefaultJobTimeout
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	q := &Queue{db: cfg.DB, driver: riversqlite.New(cfg.DB), runner: cfg.Runner, log: cfg.Logger}

	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &batchWorker{q: q}); err != nil {
		return nil, fmt.Errorf("jobs: register batch worker: %w", err)
	}
	client, err := river.NewClient(q.driver, &river.Config{
		Logger:            cfg.Logger,
		MaxAttempts:       cfg.MaxAttempts,
		JobTimeout:        cfg.JobTimeout,
		RetryPolicy:       cfg.RetryPolicy,
		FetchPollInterval: cfg.PollInterval,
		FetchCooldown:     min(cfg.PollInterval, river.FetchCooldownDefault),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.Workers}},
		Workers:           workers,
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: create river client: %w", err)
	}
	q.client = client
	return q, nil
}

// Migrate creates or upgrades river's tables.
func (q *Queue) Migrate(ctx context.Context) error {
	m, err := rivermigrate.New(q.driver, &rivermigrate.Config{Logger: q.log})
	if err != nil {
		return fmt.Errorf("jobs: river migrator: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("jobs: migrate river tables: %w", err)
	}
	return nil
}

// EnqueueTx adds one job per batch inside tx, so the jobs exist exactly
// when the task does. It has the signature of sqlstore.Enqueuer.
func (q *Queue) EnqueueTx(ctx context.Context, tx *sql.Tx, refs []tasks.BatchRef) error {
	if len(refs) == 0 {
		return nil
	}
	params := make([]river.InsertManyParams, len(refs))
	for i, ref := range refs {
		params[i] = river.InsertManyParams{Args: BatchArgs{TaskID: ref.TaskID, Batch: ref.Batch}}
	}
	if _, err := q.client.InsertManyTx(ctx, tx, params); err != nil {
		return fmt.Errorf("enqueue %d batches of task %s: %w", len(refs), refs[0].TaskID, err)
	}
	return nil
}

// Start recovers jobs abandoned by a killed predecessor and starts working.
func (q *Queue) Start(ctx context.Context) error {
	n, err := q.RecoverAbandoned(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		q.log.Info("recovered task batches interrupted by a previous run", "jobs", n)
	}
	if err := q.client.Start(ctx); err != nil {
		return fmt.Errorf("jobs: start river client: %w", err)
	}
	return nil
}

// Stop waits for running batches to finish, or until ctx is done; then it
// cancels what still runs (those jobs are recovered at the next Start).
func (q *Queue) Stop(ctx context.Context) error {
	err := q.client.Stop(ctx)
	if err == nil || ctx.Err() == nil {
		return err
	}
	hard, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.client.StopAndCancel(hard); err != nil {
		return fmt.Errorf("jobs: stop: %w", err)
	}
	return nil
}

// recoverSQL makes jobs that were running when the process died available
// again at once. It is only correct in the single-process SQLite mode (the
// server holds an exclusive lock on its data dir), where no other worker can
// be running them; river's own rescuer would wait an hour. The attempt that
// was interrupted still counts.
const recoverSQL = `UPDATE river_job SET state = 'available' WHERE state = 'running'`

// RecoverAbandoned makes jobs left running by a killed predecessor
// available now and returns how many it found. Start calls it; call it
// only before Start, in single-process (SQLite) mode.
func (q *Queue) RecoverAbandoned(ctx context.Context) (int, error) {
	res, err := q.db.ExecContext(ctx, recoverSQL)
	if err != nil {
		return 0, fmt.Errorf("jobs: recover abandoned jobs: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("jobs: recover abandoned jobs: %w", err)
	}
	return int(n), nil
}

// batchWorker runs one batch with the task runner.
type batchWorker struct {
	river.WorkerDefaults[BatchArgs]
	q *Queue
}

// failBatchRetry is how long a batch whose final failure could not be
// recorded waits before it tries again.
const failBatchRetry = 30 * time.Second

// Work runs the batch. Errors make river retry with backoff; on the final
// attempt the batch's unfinished items fail with the reason instead, so the
// task still ends.
func (w *batchWorker) Work(ctx context.Context, job *river.Job[BatchArgs]) error {
	ref := tasks.BatchRef{TaskID: job.Args.TaskID, Batch: job.Args.Batch}
	err := w.run(ctx, ref)
	if err == nil {
		return nil
	}
	log := w.q.log.With("task", ref.TaskID, "batch", ref.Batch, "attempt", job.Attempt, "maxAttempts", job.MaxAttempts)
	if job.Attempt < job.MaxAttempts {
		log.Warn("task batch failed; will retry", "err", err)
		return err
	}
	reason := fmt.Sprintf("gave up after %d attempts: %v", job.Attempt, err)
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	ferr := w.q.runner.FailBatch(fctx, ref, reason)
	if errkind.Is(ferr, errkind.NotFound) {
		log.Error("task batch failed and its task no longer exists; dropping the job", "err", err)
		return river.JobCancel(fmt.Errorf("task %s not found: %w", ref.TaskID, err))
	}
	if ferr != nil {
		log.Error("task batch failed and its failure could not be recorded; trying again later", "err", err, "failErr", ferr)
		return river.JobSnooze(failBatchRetry)
	}
	log.Error("task batch failed for good", "err", err)
	return nil
}

// run calls the runner, turning a panic into an error so the final-attempt
// handling above still happens.
func (w *batchWorker) run(ctx context.Context, ref tasks.BatchRef) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	return w.q.runner.RunBatch(ctx, ref)
}
