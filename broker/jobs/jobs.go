// Package jobs runs task batches durably on river, a job queue that lives in
// the broker's own database: a batch is enqueued in the transaction that
// creates its task, survives a crash, is retried with backoff, and after its
// last attempt fails its items instead of vanishing, so every task ends
// Success or Failure.
//
// Two engines: the embedded SQLite mode (riversqlite, one process) and
// PostgreSQL (riverdatabasesql over the same database/sql pool as the
// stores, so EnqueueTx takes the stores' *sql.Tx on both), where N replicas
// share the queue and split the batches. On PostgreSQL every queue holds a
// liveness lock (a session advisory lock named by its river client id)
// while it runs; the leader's rescuer (RunRescuer) hands the running jobs of
// a replica whose lock is free — it died — to the others at once, instead
// of river's one-hour stuck-job rescue. Steps are idempotent per thing name,
// so a batch that runs again redoes nothing already done.
package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverdatabasesql"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
)

// Defaults of Config.
const (
	DefaultMaxAttempts = 8
	DefaultWorkers     = 4
	DefaultJobTimeout  = 5 * time.Minute
	// DefaultPollInterval bounds how long a new batch waits before a worker
	// picks it up. Neither driver used here has insert notifications, so it
	// is the latency of every task stage (a deployment's expansion, then
	// its batches), twice on the way from POST /deploymentTasks to the
	// first document: at 100 ms that was 100–180 ms of the second within
	// which a deployment should reach a thousand cores. An idle queue costs
	// twenty cheap queries a second per replica (measured idle, on
	// PostgreSQL: 3.5 % of a CPU for broker and server together, 2.5 % at
	// 100 ms).
	DefaultPollInterval = 50 * time.Millisecond
	// fetchCooldown is the least time between two fetches. When a worker
	// frees up while more batches wait (a deployment's twenty batches on
	// four workers), river fetches again after it: at river's default
	// (100 ms) each round of batches waited that long for the next.
	fetchCooldown = 10 * time.Millisecond
)

// Config holds the queue's dependencies and limits.
type Config struct {
	// DB is the broker's pool (sqlstore.DB.SQL()); river keeps its tables
	// there so jobs commit with the tasks they work on.
	DB *sql.DB
	// Postgres says DB is a PostgreSQL pool (the pgx stdlib driver) that
	// replicas may share; false means the single-process SQLite mode.
	Postgres bool
	Runner   *tasks.Runner
	Logger   *slog.Logger
	// MaxAttempts is how often a batch is tried before its unfinished
	// items fail (default 8).
	MaxAttempts int
	// Workers is how many batches run at once (default 4).
	Workers int
	// InsertOnly makes a queue that enqueues batches but never works them:
	// an API-only replica, whose CPUs stay with the API and the MQTT
	// handlers while replicas started with workers run the bulk tasks.
	// PostgreSQL only (on SQLite no other process could work them).
	InsertOnly bool
	// JobTimeout bounds one attempt of one batch (default 5m).
	JobTimeout time.Duration
	// RetryPolicy decides when a failed attempt is retried; nil means
	// river's exponential backoff (tests use a fast one).
	RetryPolicy river.ClientRetryPolicy
	// PollInterval is how often idle workers look for new jobs (neither
	// driver used here has notifications); default DefaultPollInterval.
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
	db         *sql.DB
	postgres   bool
	id         string // river client id; names the liveness lock on PostgreSQL
	driver     riverdriver.Driver[*sql.Tx]
	client     *river.Client[*sql.Tx]
	runner     *tasks.Runner
	log        *slog.Logger
	insertOnly bool
	// stuckAfter is how long a job may stay running before the rescuer
	// takes it back even from a live replica (RescueOrphans).
	stuckAfter time.Duration

	mu       sync.Mutex
	liveness *sql.Conn // holds the liveness lock while the queue runs (PostgreSQL)
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
	if cfg.InsertOnly && !cfg.Postgres {
		return nil, errors.New("jobs: an insert-only queue needs PostgreSQL, where other replicas work its batches")
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
	q := &Queue{db: cfg.DB, postgres: cfg.Postgres, insertOnly: cfg.InsertOnly, id: newClientID(), runner: cfg.Runner, log: cfg.Logger,
		stuckAfter: cfg.JobTimeout + stuckMargin}
	if cfg.Postgres {
		q.driver = riverdatabasesql.New(cfg.DB)
	} else {
		q.driver = riversqlite.New(cfg.DB)
	}

	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &batchWorker{q: q}); err != nil {
		return nil, fmt.Errorf("jobs: register batch worker: %w", err)
	}
	rcfg := &river.Config{
		ID:                q.id,
		Logger:            cfg.Logger,
		MaxAttempts:       cfg.MaxAttempts,
		JobTimeout:        cfg.JobTimeout,
		RetryPolicy:       cfg.RetryPolicy,
		FetchPollInterval: cfg.PollInterval,
		FetchCooldown:     min(cfg.PollInterval, fetchCooldown),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.Workers}},
		Workers:           workers,
	}
	if cfg.InsertOnly {
		rcfg.Queues = nil // river's insert-only client: it never fetches
	}
	client, err := river.NewClient(q.driver, rcfg)
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

// newClientID names this process's river client: host, pid and a random
// suffix, unique across replicas and restarts.
func newClientID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "ggfleet"
	}
	return fmt.Sprintf("%s-%d-%s", strings.ReplaceAll(host, " ", "_"), os.Getpid(), tasks.NewID()[:8])
}

// ID returns the river client id (river_job.attempted_by names it).
func (q *Queue) ID() string { return q.id }

// Start begins working. On SQLite it first recovers the jobs a killed
// predecessor left running; on PostgreSQL it first takes its liveness
// lock, so other replicas know it is alive. An insert-only queue has
// nothing to start: it never runs a batch, so it needs no liveness lock.
func (q *Queue) Start(ctx context.Context) error {
	if q.insertOnly {
		q.log.Info("API-only replica: task batches are worked by the replicas started with --workers", "replica", q.id)
		return nil
	}
	if q.postgres {
		if err := q.takeLiveness(ctx); err != nil {
			return err
		}
		if err := q.client.Start(ctx); err != nil {
			q.releaseLiveness()
			return fmt.Errorf("jobs: start river client: %w", err)
		}
		return nil
	}
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
	defer q.releaseLiveness()
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
