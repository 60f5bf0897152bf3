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
func (d *DB) UpdateItems(ctx context.Context, items []tasks.Item) error {
	if len(items) == 0 {
		return nil
	}
	return d.InTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, d.q(`UPDATE task_items SET status = ?, status_message = ?, updated_at = ?, progress = ? WHERE task_id = ? AND name = ?`))
		if err != nil {
			return mapErr(err, fmt.Sprintf("update %d items of task %s", len(items), items[0].TaskID))
		}
		defer stmt.Close()
		for _, it := range items {
			res, err := stmt.ExecContext(ctx, taskStatusOr(it.Status), it.StatusMessage, millis(it.UpdatedAt), string(it.Progress), it.TaskID, it.Name)
			if err != nil {
				return mapErr(err, fmt.Sprintf("update item %q of task %s", it.Name, it.TaskID))
			}
			if n, err := res.RowsAffected(); err == nil && n == 0 {
				return errkind.New(errkind.NotFound, "item %q of task %s not found", it.Name, it.TaskID)
			}
		}
		return nil
	})
}

// placeholders returns "?, ?, …" for n values (rebound by q on PostgreSQL).
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// stringArgs returns names as query arguments.
func stringArgs(names []string) []any {
	out := make([]any, len(names))
	for i, n := range names {
		out[i] = n
	}
	return out
}
