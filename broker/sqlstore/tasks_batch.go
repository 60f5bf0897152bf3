package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
)

var _ tasks.ItemsUpdater = (*DB)(nil)

// UpdateItems saves many items in one transaction (one commit instead of
// one per item): status, message, progress and updated time, all or none.
// Each chunk of up to batchRows items is one UPDATE … FROM (VALUES …); an
// item given twice is saved as its last occurrence. errkind.NotFound names
// an item that does not exist, and nothing is saved.
func (d *DB) UpdateItems(ctx context.Context, items []tasks.Item) error {
	if len(items) == 0 {
		return nil
	}
	type key struct{ task, name string }
	last := make(map[key]int, len(items))
	for i, it := range items {
		last[key{it.TaskID, it.Name}] = i
	}
	rows := make([][]any, 0, len(last))
	for i, it := range items {
		if last[key{it.TaskID, it.Name}] != i {
			continue
		}
		rows = append(rows, []any{it.TaskID, it.Name, taskStatusOr(it.Status), it.StatusMessage, millis(it.UpdatedAt), string(it.Progress)})
	}
	what := fmt.Sprintf("update %d items of task %s", len(items), items[0].TaskID)
	return d.InTx(ctx, func(tx *sql.Tx) error {
		for _, c := range chunks(len(rows)) {
			chunk := rows[c[0]:c[1]]
			with, args := valuesCTE(`task_id, name, status, status_message, updated_at, progress`,
				`(?, ?, ?, ?, CAST(? AS BIGINT), ?)`, chunk)
			res, err := tx.ExecContext(ctx, d.q(with+`UPDATE task_items SET status = v.status, status_message = v.status_message,
				updated_at = v.updated_at, progress = v.progress
				FROM v WHERE task_items.task_id = v.task_id AND task_items.name = v.name`), args...)
			if err != nil {
				return mapErr(err, what)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return mapErr(err, what)
			}
			if n < int64(len(chunk)) {
				return d.missingItem(ctx, tx, chunk)
			}
		}
		return nil
	})
}

// missingItem returns errkind.NotFound naming one item of rows (UpdateItems'
// rows: task id and name first) that does not exist.
func (d *DB) missingItem(ctx context.Context, tx *sql.Tx, rows [][]any) error {
	keys := make([][]any, len(rows))
	for i, r := range rows {
		keys[i] = r[:2]
	}
	with, args := valuesCTE(`task_id, name`, `(?, ?)`, keys)
	var task, name string
	err := tx.QueryRowContext(ctx, d.q(with+`SELECT v.task_id, v.name FROM v WHERE v.name IS NOT NULL AND NOT EXISTS
		(SELECT 1 FROM task_items WHERE task_items.task_id = v.task_id AND task_items.name = v.name) LIMIT 1`), args...).Scan(&task, &name)
	if err != nil {
		return mapErr(err, fmt.Sprintf("look up the missing one of %d items of task %v", len(rows), rows[0][0]))
	}
	return errkind.New(errkind.NotFound, "item %q of task %s not found", name, task)
}

// placeholders returns "?, ?, …" for n values (rebound by q on PostgreSQL).
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}
