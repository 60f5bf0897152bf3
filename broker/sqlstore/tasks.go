package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Enqueuer adds one job per batch to the job queue inside the transaction
// that creates the task, so a task is never stored without the work that
// finishes it (jobs.Queue.EnqueueTx has this signature).
type Enqueuer func(ctx context.Context, tx *sql.Tx, refs []tasks.BatchRef) error

// SetEnqueuer installs the job queue hook CreateTask calls. It must be set
// before the first CreateTask; without it CreateTask fails.
func (d *DB) SetEnqueuer(fn func(ctx context.Context, tx *sql.Tx, refs []tasks.BatchRef) error) {
	d.enqueue = fn
}

var _ tasks.Store = (*DB)(nil)

const taskColumns = `id, kind, type, core_name, status, status_message, created_at, updated_at, request, batches_total, batches_complete`

const (
	itemStateColumns = `task_id, name, seq, batch, status, status_message, created_at, updated_at`
	itemColumns      = itemStateColumns + `, input, progress`
)

// CreateTask stores a task and its items and enqueues one job per batch, all
// in one transaction.
func (d *DB) CreateTask(ctx context.Context, t tasks.Task, items []tasks.Item) error {
	if d.enqueue == nil {
		return fmt.Errorf("create task %s: no job queue is configured (call SetEnqueuer)", t.ID)
	}
	request := string(t.Request)
	if len(t.Request) == 0 {
		request = "{}"
	}
	return d.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, d.q(`INSERT INTO tasks (`+taskColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			t.ID, string(t.Kind), t.Type, t.CoreName, taskStatusOr(t.Status), t.StatusMessage,
			millis(t.CreatedAt), millis(t.UpdatedAt), request, t.BatchesTotal, t.BatchesComplete)
		if err != nil {
			return mapErr(err, fmt.Sprintf("create task %s", t.ID))
		}
		if err := d.insertItems(ctx, tx, t.ID, items, t.CreatedAt); err != nil {
			return err
		}
		refs := make([]tasks.BatchRef, t.BatchesTotal)
		for i := range refs {
			refs[i] = tasks.BatchRef{TaskID: t.ID, Batch: i}
		}
		if len(refs) == 0 {
			return nil
		}
		if err := d.enqueue(ctx, tx, refs); err != nil {
			return fmt.Errorf("enqueue %d batches of task %s: %w", len(refs), t.ID, err)
		}
		return nil
	})
}

// insertItems inserts the items of task taskID, each chunk of up to
// batchRows items by one multi-row INSERT; an item without a creation time
// gets created. A name given twice, or stored already, is errkind.Conflict.
func (d *DB) insertItems(ctx context.Context, tx *sql.Tx, taskID string, items []tasks.Item, created time.Time) error {
	for _, c := range chunks(len(items)) {
		chunk := items[c[0]:c[1]]
		rows := make([][]any, len(chunk))
		for i, it := range chunk {
			input := string(it.Input)
			if len(it.Input) == 0 {
				input = "{}"
			}
			at := it.CreatedAt
			if at.IsZero() {
				at = created
			}
			rows[i] = []any{taskID, it.Name, it.Seq, it.Batch, taskStatusOr(it.Status), it.StatusMessage,
				millis(at), millis(it.UpdatedAt), input, string(it.Progress)}
		}
		with, args := valuesCTE(itemColumns, `(?, ?, CAST(? AS INTEGER), CAST(? AS INTEGER), ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), ?, ?)`, rows)
		if _, err := tx.ExecContext(ctx, d.q(with+`INSERT INTO task_items (`+itemColumns+`) SELECT `+itemColumns+` FROM v WHERE name IS NOT NULL`), args...); err != nil {
			return mapErr(err, fmt.Sprintf("create %d items of task %s", len(chunk), taskID))
		}
	}
	return nil
}

// taskStatusOr defaults an empty status to Waiting.
func taskStatusOr(s string) string {
	if s == "" {
		return cdf.StatusWaiting
	}
	return s
}

// GetTask returns one task, or errkind.NotFound. It reads through the read
// pool: one statement, outside any transaction (CompleteBatch reads the
// task in its own transaction with getTask).
func (d *DB) GetTask(ctx context.Context, id string) (tasks.Task, error) {
	return getTask(ctx, d, d.r(ctx), id)
}

func getTask(ctx context.Context, d *DB, q Querier, id string) (tasks.Task, error) {
	t, err := scanTask(q.QueryRowContext(ctx, d.q(`SELECT `+taskColumns+` FROM tasks WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return tasks.Task{}, errkind.New(errkind.NotFound, "task %s not found", id)
	}
	if err != nil {
		return tasks.Task{}, mapErr(err, fmt.Sprintf("get task %s", id))
	}
	return t, nil
}

// ListTasks returns up to count tasks of a kind in id order after the
// cursor, and whether more exist, through the read pool.
func (d *DB) ListTasks(ctx context.Context, kind tasks.Kind, count int, after string) ([]tasks.Task, bool, error) {
	if count < 1 {
		count = 100
	}
	rows, err := d.r(ctx).QueryContext(ctx, d.q(`SELECT `+taskColumns+` FROM tasks WHERE kind = ? AND id > ? ORDER BY id LIMIT ?`),
		string(kind), after, count+1)
	if err != nil {
		return nil, false, mapErr(err, "list tasks")
	}
	defer rows.Close()
	var out []tasks.Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, false, mapErr(err, "list tasks")
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, false, mapErr(err, "list tasks")
	}
	more := len(out) > count
	if more {
		out = out[:count]
	}
	return out, more, nil
}

// inRequestOrder orders a task's items as they were requested. An item's
// batch grows with its seq (tasks.Batches), so ordering by both gives the
// seq order while following the (task_id, batch, seq) index: no sort of the
// whole task on every poll of a big task.
const inRequestOrder = ` ORDER BY batch, seq`

// ListItems returns every item of a task in request order, through the
// read pool (the API's task GETs).
func (d *DB) ListItems(ctx context.Context, taskID string) ([]tasks.Item, error) {
	return d.queryItemsOn(ctx, d.r(ctx), `SELECT `+itemColumns+` FROM task_items WHERE task_id = ?`+inRequestOrder, taskID)
}

// ListItemStates returns a task's items in request order without their
// input and progress (tasks.Store).
func (d *DB) ListItemStates(ctx context.Context, taskID string) ([]tasks.Item, error) {
	return d.queryItemsOn(ctx, d.r(ctx), `SELECT `+itemStateColumns+`, '', '' FROM task_items WHERE task_id = ?`+inRequestOrder, taskID)
}

// ListBatchItems returns the items of one batch of a task in request order.
// It reads through the writer: the runner decides from it which items to
// process.
func (d *DB) ListBatchItems(ctx context.Context, taskID string, batch int) ([]tasks.Item, error) {
	return d.queryItems(ctx, `SELECT `+itemColumns+` FROM task_items WHERE task_id = ? AND batch = ? ORDER BY seq`, taskID, batch)
}

// queryItems runs an item query through the writer pool.
func (d *DB) queryItems(ctx context.Context, query string, args ...any) ([]tasks.Item, error) {
	return d.queryItemsOn(ctx, d.w(ctx), query, args...)
}

// queryItemsOn runs an item query through q.
func (d *DB) queryItemsOn(ctx context.Context, q Querier, query string, args ...any) ([]tasks.Item, error) {
	what := fmt.Sprintf("list items of task %v", args[0])
	rows, err := q.QueryContext(ctx, d.q(query), args...)
	if err != nil {
		return nil, mapErr(err, what)
	}
	defer rows.Close()
	var out []tasks.Item
	for rows.Next() {
		var (
			it               tasks.Item
			created, updated int64
			input, progress  string
		)
		if err := rows.Scan(&it.TaskID, &it.Name, &it.Seq, &it.Batch, &it.Status, &it.StatusMessage,
			&created, &updated, &input, &progress); err != nil {
			return nil, mapErr(err, what)
		}
		it.CreatedAt, it.UpdatedAt = fromMillis(created), fromMillis(updated)
		if input != "" {
			it.Input = json.RawMessage(input)
		}
		if progress != "" {
			it.Progress = json.RawMessage(progress)
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(err, what)
	}
	return out, nil
}

// UpdateItem saves an item's status, message, progress and updated time.
func (d *DB) UpdateItem(ctx context.Context, it tasks.Item) error {
	res, err := d.w(ctx).ExecContext(ctx, d.q(`UPDATE task_items SET status = ?, status_message = ?, updated_at = ?, progress = ? WHERE task_id = ? AND name = ?`),
		taskStatusOr(it.Status), it.StatusMessage, millis(it.UpdatedAt), string(it.Progress), it.TaskID, it.Name)
	if err != nil {
		return mapErr(err, fmt.Sprintf("update item %q of task %s", it.Name, it.TaskID))
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errkind.New(errkind.NotFound, "item %q of task %s not found", it.Name, it.TaskID)
	}
	return nil
}

// StartTask moves a Waiting task to InProgress; other states are left alone.
func (d *DB) StartTask(ctx context.Context, id string, now time.Time) error {
	_, err := d.w(ctx).ExecContext(ctx, d.q(`UPDATE tasks SET status = ?, updated_at = ? WHERE id = ? AND status = ?`),
		cdf.StatusInProgress, millis(now), id, cdf.StatusWaiting)
	return mapErr(err, fmt.Sprintf("start task %s", id))
}

// CompleteBatch records a batch as done (once per batch), makes the task
// Failure when failed (sticky; the first message wins), and Success when
// every batch is done and it is not Failure. It returns the task.
func (d *DB) CompleteBatch(ctx context.Context, id string, batch int, failed bool, message string, now time.Time) (tasks.Task, error) {
	var out tasks.Task
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		// Lock the task row first. On PostgreSQL (read committed) two
		// replicas completing the task's last two batches at once would
		// otherwise each count only their own new batch and both save
		// total-1: the task stayed InProgress for ever. The lock also keeps
		// a concurrent completion from overwriting a sticky Failure.
		if _, err := tx.ExecContext(ctx, d.q(`UPDATE tasks SET batches_complete = batches_complete WHERE id = ?`), id); err != nil {
			return mapErr(err, fmt.Sprintf("lock task %s", id))
		}
		t, err := getTask(ctx, d, tx, id)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, d.q(`INSERT INTO task_batches (task_id, batch) VALUES (?, ?) ON CONFLICT DO NOTHING`), id, batch); err != nil {
			return mapErr(err, fmt.Sprintf("record batch %d of task %s", batch, id))
		}
		if err := tx.QueryRowContext(ctx, d.q(`SELECT COUNT(*) FROM task_batches WHERE task_id = ?`), id).Scan(&t.BatchesComplete); err != nil {
			return mapErr(err, fmt.Sprintf("count batches of task %s", id))
		}
		if failed {
			if t.StatusMessage == "" {
				t.StatusMessage = message
			}
			t.Status = cdf.StatusFailure
		}
		if t.Status != cdf.StatusFailure && t.BatchesComplete >= t.BatchesTotal {
			t.Status = cdf.StatusSuccess
		}
		t.UpdatedAt = fromMillis(millis(now))
		_, err = tx.ExecContext(ctx, d.q(`UPDATE tasks SET status = ?, status_message = ?, batches_complete = ?, updated_at = ? WHERE id = ?`),
			t.Status, t.StatusMessage, t.BatchesComplete, millis(now), id)
		if err != nil {
			return mapErr(err, fmt.Sprintf("complete batch %d of task %s", batch, id))
		}
		out = t
		return nil
	})
	return out, err
}

// taskScanner is *sql.Row or *sql.Rows.
type taskScanner interface{ Scan(dest ...any) error }

func scanTask(s taskScanner) (tasks.Task, error) {
	var (
		t                tasks.Task
		kind, request    string
		created, updated int64
	)
	if err := s.Scan(&t.ID, &kind, &t.Type, &t.CoreName, &t.Status, &t.StatusMessage,
		&created, &updated, &request, &t.BatchesTotal, &t.BatchesComplete); err != nil {
		return tasks.Task{}, err
	}
	t.Kind = tasks.Kind(kind)
	t.CreatedAt, t.UpdatedAt = fromMillis(created), fromMillis(updated)
	t.Request = json.RawMessage(request)
	return t, nil
}
