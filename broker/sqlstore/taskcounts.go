package sqlstore

import (
	"context"
	"fmt"
)

// CountTasks returns the number of tasks by kind and then by status, for
// the ggfleet_tasks gauge (httpapi.TaskCounter). It reads one small
// aggregate through the read pool, so it is cheap enough to run at every
// scrape and never waits for task transactions.
func (d *DB) CountTasks(ctx context.Context) (map[string]map[string]int, error) {
	rows, err := d.r(ctx).QueryContext(ctx, d.q(`SELECT kind, status, COUNT(*) FROM tasks GROUP BY kind, status`))
	if err != nil {
		return nil, mapErr(err, "count tasks")
	}
	defer rows.Close()
	counts := map[string]map[string]int{}
	for rows.Next() {
		var kind, status string
		var n int
		if err := rows.Scan(&kind, &status, &n); err != nil {
			return nil, fmt.Errorf("count tasks: %w", err)
		}
		if counts[kind] == nil {
			counts[kind] = map[string]int{}
		}
		counts[kind][status] = n
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(err, "count tasks")
	}
	return counts, nil
}
