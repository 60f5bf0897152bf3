package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Deployment tasks: two-stage tasks (tasks.ExpandStore), the desired
// deployment document of each core, and the items that wait for their
// core's report (deploy.Store).

var (
	_ deploy.Store      = (*DB)(nil)
	_ tasks.ExpandStore = (*DB)(nil)
	_ deploy.Cores      = (*CoreStore)(nil)
)

// CreateExpandingTask stores a task with no items and enqueues the job of
// its first stage (tasks.ExpandBatch), in one transaction.
func (d *DB) CreateExpandingTask(ctx context.Context, t tasks.Task) error {
	if d.enqueue == nil {
		return fmt.Errorf("create task %s: no job queue is configured (call SetEnqueuer)", t.ID)
	}
	request := string(t.Request)
	if len(t.Request) == 0 {
		request = "{}"
	}
	return d.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, d.q(`INSERT INTO tasks (`+taskColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)`),
			t.ID, string(t.Kind), t.Type, t.CoreName, taskStatusOr(t.Status), t.StatusMessage,
			millis(t.CreatedAt), millis(t.UpdatedAt), request)
		if err != nil {
			return mapErr(err, fmt.Sprintf("create task %s", t.ID))
		}
		if err := d.enqueue(ctx, tx, []tasks.BatchRef{{TaskID: t.ID, Batch: tasks.ExpandBatch}}); err != nil {
			return fmt.Errorf("enqueue the expansion of task %s: %w", t.ID, err)
		}
		return nil
	})
}

// AddItems stores the items of an expanded task, sets batches_total and
// enqueues one job per batch, once: a task that already has batches or has
// failed is left alone (false).
func (d *DB) AddItems(ctx context.Context, taskID string, items []tasks.Item, batchesTotal int, now time.Time) (bool, error) {
	added := false
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, d.q(`UPDATE tasks SET batches_total = ? WHERE id = ? AND batches_total = 0 AND status NOT IN (?, ?)`),
			batchesTotal, taskID, cdf.StatusFailure, cdf.StatusSuccess)
		if err != nil {
			return mapErr(err, fmt.Sprintf("set batches of task %s", taskID))
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return mapErr(err, fmt.Sprintf("set batches of task %s", taskID))
		}
		if err := d.insertItems(ctx, tx, taskID, items, time.Time{}); err != nil {
			return err
		}
		refs := make([]tasks.BatchRef, batchesTotal)
		for i := range refs {
			refs[i] = tasks.BatchRef{TaskID: taskID, Batch: i}
		}
		if len(refs) > 0 {
			if err := d.enqueue(ctx, tx, refs); err != nil {
				return fmt.Errorf("enqueue %d batches of task %s: %w", len(refs), taskID, err)
			}
		}
		added = true
		return nil
	})
	return added, err
}

// FailTask makes a task Failure; an existing status message is kept.
func (d *DB) FailTask(ctx context.Context, id, message string, now time.Time) error {
	res, err := d.w(ctx).ExecContext(ctx, d.q(`UPDATE tasks SET status = ?, updated_at = ?,
		status_message = CASE WHEN status_message = '' THEN ? ELSE status_message END WHERE id = ?`),
		cdf.StatusFailure, millis(now), message, id)
	if err != nil {
		return mapErr(err, fmt.Sprintf("fail task %s", id))
	}
	return deployMustAffect(res, fmt.Sprintf("task %s", id))
}

const documentColumns = `core, task_id, deployment_id, template_name, template_version, document, updated_at`

func scanDocument(row interface{ Scan(dest ...any) error }) (deploy.Document, error) {
	var (
		doc     deploy.Document
		payload string
		updated int64
	)
	err := row.Scan(&doc.Core, &doc.TaskID, &doc.DeploymentID, &doc.TemplateName, &doc.TemplateVersion, &payload, &updated)
	doc.Payload, doc.UpdatedAt = []byte(payload), fromMillis(updated)
	return doc, err
}

// PutDocument stores a core's desired document and returns the one it replaced.
func (d *DB) PutDocument(ctx context.Context, doc deploy.Document) (deploy.Document, bool, error) {
	var (
		prev  deploy.Document
		found bool
	)
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		p, err := scanDocument(tx.QueryRowContext(ctx, d.q(`SELECT `+documentColumns+` FROM deployment_documents WHERE core = ?`), doc.Core))
		switch {
		case err == nil:
			prev, found = p, true
		case !errors.Is(err, sql.ErrNoRows):
			return mapErr(err, fmt.Sprintf("deployment document of core %s", doc.Core))
		}
		_, err = tx.ExecContext(ctx, d.q(`INSERT INTO deployment_documents (`+documentColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (core) DO UPDATE SET task_id = excluded.task_id, deployment_id = excluded.deployment_id,
			template_name = excluded.template_name, template_version = excluded.template_version,
			document = excluded.document, updated_at = excluded.updated_at`),
			doc.Core, doc.TaskID, doc.DeploymentID, doc.TemplateName, doc.TemplateVersion, string(doc.Payload), millis(doc.UpdatedAt))
		return mapErr(err, fmt.Sprintf("store deployment document of core %s", doc.Core))
	})
	return prev, found, err
}

// GetDocument returns a core's desired document or errkind.NotFound.
func (d *DB) GetDocument(ctx context.Context, core string) (deploy.Document, error) {
	doc, err := scanDocument(d.w(ctx).QueryRowContext(ctx, d.q(`SELECT `+documentColumns+` FROM deployment_documents WHERE core = ?`), core))
	if err != nil {
		return deploy.Document{}, mapErr(err, fmt.Sprintf("deployment document of core %s", core))
	}
	return doc, nil
}

// ListDocuments returns up to count documents in core order after the cursor.
func (d *DB) ListDocuments(ctx context.Context, after string, count int) ([]deploy.Document, error) {
	rows, err := d.w(ctx).QueryContext(ctx, d.q(`SELECT `+documentColumns+` FROM deployment_documents WHERE core > ? ORDER BY core LIMIT ?`), after, count)
	if err != nil {
		return nil, mapErr(err, "list deployment documents")
	}
	defer rows.Close()
	var out []deploy.Document
	for rows.Next() {
		doc, err := scanDocument(rows)
		if err != nil {
			return nil, mapErr(err, "list deployment documents")
		}
		out = append(out, doc)
	}
	return out, mapErr(rows.Err(), "list deployment documents")
}

// PutWait records a waiting item; an existing wait keeps its deadline.
func (d *DB) PutWait(ctx context.Context, w deploy.Wait) error {
	_, err := d.w(ctx).ExecContext(ctx, d.q(`INSERT INTO deployment_waits (task_id, core, batch, deployment_id, deadline) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (task_id, core) DO NOTHING`), w.TaskID, w.Core, w.Batch, w.DeploymentID, millis(w.Deadline))
	return mapErr(err, fmt.Sprintf("record the wait of core %s in task %s", w.Core, w.TaskID))
}

func (d *DB) queryWaits(ctx context.Context, what, query string, args ...any) ([]deploy.Wait, error) {
	rows, err := d.w(ctx).QueryContext(ctx, d.q(`SELECT task_id, core, batch, deployment_id, deadline FROM deployment_waits `+query), args...)
	if err != nil {
		return nil, mapErr(err, what)
	}
	defer rows.Close()
	var out []deploy.Wait
	for rows.Next() {
		var (
			w        deploy.Wait
			deadline int64
		)
		if err := rows.Scan(&w.TaskID, &w.Core, &w.Batch, &w.DeploymentID, &deadline); err != nil {
			return nil, mapErr(err, what)
		}
		w.Deadline = fromMillis(deadline)
		out = append(out, w)
	}
	return out, mapErr(rows.Err(), what)
}

// WaitsForCore returns the waits of a core.
func (d *DB) WaitsForCore(ctx context.Context, core string) ([]deploy.Wait, error) {
	return d.queryWaits(ctx, fmt.Sprintf("waits of core %s", core), `WHERE core = ? ORDER BY task_id`, core)
}

// OverdueWaits returns up to limit waits whose deadline is not after now.
func (d *DB) OverdueWaits(ctx context.Context, now time.Time, limit int) ([]deploy.Wait, error) {
	return d.queryWaits(ctx, "overdue deployment waits", `WHERE deadline <= ? ORDER BY deadline LIMIT ?`, millis(now), limit)
}

// Finish makes a waiting item final once (conditional update), removes its
// wait and applies the core state, in one transaction; then it counts the
// batch's unfinished items, so only the outcomes that finish a batch have
// to complete it. It is FinishMany of one outcome.
//
// The count runs after the commit, not inside the transaction: on
// PostgreSQL (read committed) two outcomes finishing a batch's last two
// items at once would each see the other's item unfinished inside their
// transactions, and neither would complete the batch. After its commit, the
// later of the two sees both (both may; completing is idempotent). Locking
// the task row instead would serialise every outcome of a task, commit
// (fsync) included.
func (d *DB) Finish(ctx context.Context, o deploy.Outcome) (deploy.Finished, error) {
	res, err := d.FinishMany(ctx, []deploy.Outcome{o})
	if err != nil {
		return deploy.Finished{}, err
	}
	return res[0], nil
}

// PendingBatches returns batches of unfinished deployment tasks whose items
// are all final but that were never completed.
func (d *DB) PendingBatches(ctx context.Context) ([]tasks.BatchRef, error) {
	rows, err := d.w(ctx).QueryContext(ctx, d.q(`SELECT i.task_id, i.batch FROM task_items i JOIN tasks t ON t.id = i.task_id
		WHERE t.kind = ? AND t.batches_complete < t.batches_total
		AND NOT EXISTS (SELECT 1 FROM task_batches b WHERE b.task_id = i.task_id AND b.batch = i.batch)
		GROUP BY i.task_id, i.batch
		HAVING SUM(CASE WHEN i.status IN (?, ?) THEN 0 ELSE 1 END) = 0
		ORDER BY i.task_id, i.batch`), string(tasks.KindDeployment), cdf.StatusSuccess, cdf.StatusFailure)
	if err != nil {
		return nil, mapErr(err, "pending deployment batches")
	}
	defer rows.Close()
	var out []tasks.BatchRef
	for rows.Next() {
		var ref tasks.BatchRef
		if err := rows.Scan(&ref.TaskID, &ref.Batch); err != nil {
			return nil, mapErr(err, "pending deployment batches")
		}
		out = append(out, ref)
	}
	return out, mapErr(rows.Err(), "pending deployment batches")
}

// ListTaskItems returns up to count items of a task in name order after the cursor.
func (d *DB) ListTaskItems(ctx context.Context, taskID string, count int, after string) ([]tasks.Item, bool, error) {
	items, err := d.queryItems(ctx, `SELECT `+itemColumns+` FROM task_items WHERE task_id = ? AND name > ? ORDER BY name LIMIT ?`, taskID, after, count+1)
	if err != nil {
		return nil, false, err
	}
	more := len(items) > count
	if more {
		items = items[:count]
	}
	return items, more, nil
}

// GetTaskItem returns one item of a task or errkind.NotFound.
func (d *DB) GetTaskItem(ctx context.Context, taskID, name string) (tasks.Item, error) {
	items, err := d.queryItems(ctx, `SELECT `+itemColumns+` FROM task_items WHERE task_id = ? AND name = ?`, taskID, name)
	if err != nil {
		return tasks.Item{}, err
	}
	if len(items) == 0 {
		return tasks.Item{}, errkind.New(errkind.NotFound, "core %s is not part of task %s", name, taskID)
	}
	return items[0], nil
}

// ListCoreDeployments returns up to count deployment items of a core, with
// their task's times, in task id order after the cursor.
func (d *DB) ListCoreDeployments(ctx context.Context, core string, count int, after string) ([]deploy.CoreDeployment, bool, error) {
	what := fmt.Sprintf("deployments of core %s", core)
	rows, err := d.w(ctx).QueryContext(ctx, d.q(`SELECT i.task_id, i.name, i.seq, i.batch, i.status, i.status_message, i.created_at, i.updated_at,
		t.created_at, t.updated_at FROM task_items i JOIN tasks t ON t.id = i.task_id
		WHERE i.name = ? AND t.kind = ? AND i.task_id > ? ORDER BY i.task_id LIMIT ?`),
		core, string(tasks.KindDeployment), after, count+1)
	if err != nil {
		return nil, false, mapErr(err, what)
	}
	defer rows.Close()
	var out []deploy.CoreDeployment
	for rows.Next() {
		var (
			cd                             deploy.CoreDeployment
			created, updated, tcre, tupdat int64
		)
		it := &cd.Item
		if err := rows.Scan(&it.TaskID, &it.Name, &it.Seq, &it.Batch, &it.Status, &it.StatusMessage, &created, &updated, &tcre, &tupdat); err != nil {
			return nil, false, mapErr(err, what)
		}
		it.CreatedAt, it.UpdatedAt = fromMillis(created), fromMillis(updated)
		cd.TaskCreatedAt, cd.TaskUpdatedAt = fromMillis(tcre), fromMillis(tupdat)
		out = append(out, cd)
	}
	if err := rows.Err(); err != nil {
		return nil, false, mapErr(err, what)
	}
	more := len(out) > count
	if more {
		out = out[:count]
	}
	return out, more, nil
}
