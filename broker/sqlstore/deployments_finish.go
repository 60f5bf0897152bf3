package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

var _ deploy.BatchFinisher = (*DB)(nil)

// FinishMany applies many deployment outcomes (agents' reports arriving
// together) in one transaction of a few set-based statements per chunk,
// with the result Finish would have given for each, applied in order:
// the items still open become final, every outcome's wait is dropped, and
// the core of an outcome that changed its item and is still the core's
// current deployment gets its status. Of two outcomes of one item the first
// counts (the second finds the item final). After the commit each batch
// that changed is counted once; BatchDone is set on the last outcome that
// changed an item of a batch found complete.
func (d *DB) FinishMany(ctx context.Context, outs []deploy.Outcome) ([]deploy.Finished, error) {
	res := make([]deploy.Finished, len(outs))
	if len(outs) == 0 {
		return res, nil
	}
	type key struct{ task, core string }
	first := make(map[key]int, len(outs))
	var uniq []int // indexes of the first outcome of each item
	for i, o := range outs {
		k := key{o.TaskID, o.Core}
		if _, dup := first[k]; !dup {
			first[k] = i
			uniq = append(uniq, i)
		}
	}
	what := fmt.Sprintf("finish %d deployment items", len(outs))
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		clear(res) // a retried transaction starts over
		for _, c := range chunks(len(uniq)) {
			if err := d.finishChunk(ctx, tx, outs, uniq[c[0]:c[1]], res, what); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, o := range outs { // later duplicates: the item's batch, not changed by them
		if j := first[key{o.TaskID, o.Core}]; j != i {
			res[i].Batch = res[j].Batch
		}
	}

	// Count each changed batch once, after the commit.
	type batchKey struct {
		task  string
		batch int
	}
	last := map[batchKey]int{}
	for i, r := range res {
		if r.Changed {
			last[batchKey{outs[i].TaskID, r.Batch}] = i
		}
	}
	for b, i := range last {
		var open int
		if err := d.w(ctx).QueryRowContext(ctx, d.q(`SELECT COUNT(*) FROM task_items WHERE task_id = ? AND batch = ? AND status NOT IN (?, ?)`),
			b.task, b.batch, cdf.StatusSuccess, cdf.StatusFailure).Scan(&open); err != nil {
			return nil, mapErr(err, fmt.Sprintf("count open items of batch %d of task %s", b.batch, b.task))
		}
		res[i].BatchDone = open == 0
	}
	return res, nil
}

// finishChunk applies the outcomes outs[idx…] (distinct items, at most
// batchRows) inside tx, recording each one's Changed and Batch in res.
func (d *DB) finishChunk(ctx context.Context, tx *sql.Tx, outs []deploy.Outcome, idx []int, res []deploy.Finished, what string) error {
	type key struct{ task, core string }
	keys := make([][]any, len(idx))
	items := make([][]any, len(idx))
	at := make(map[key]int, len(idx))
	for n, i := range idx {
		o := outs[i]
		keys[n] = []any{o.TaskID, o.Core}
		items[n] = []any{o.TaskID, o.Core, o.Status, o.Message, millis(o.Now)}
		at[key{o.TaskID, o.Core}] = i
	}

	// The items' batches (an item that is gone has no batch: its task was deleted).
	with, args := valuesCTE(`tid, nm`, `(?, ?)`, keys)
	rows, err := tx.QueryContext(ctx, d.q(with+`SELECT i.task_id, i.name, i.batch FROM task_items i
		JOIN v ON i.task_id = v.tid AND i.name = v.nm`), args...)
	if err != nil {
		return mapErr(err, what)
	}
	for rows.Next() {
		var k key
		var batch int
		if err := rows.Scan(&k.task, &k.core, &batch); err != nil {
			rows.Close()
			return mapErr(err, what)
		}
		res[at[k]].Batch = batch
	}
	if err := rows.Close(); err != nil {
		return mapErr(err, what)
	}

	// The items still open become final; RETURNING says which did.
	with, args = valuesCTE(`tid, nm, st, msg, upd`, `(?, ?, ?, ?, CAST(? AS BIGINT))`, items)
	args = append(args, cdf.StatusSuccess, cdf.StatusFailure)
	rows, err = tx.QueryContext(ctx, d.q(with+`UPDATE task_items SET status = v.st, status_message = v.msg, updated_at = v.upd
		FROM v WHERE task_items.task_id = v.tid AND task_items.name = v.nm AND task_items.status NOT IN (?, ?)
		RETURNING task_id, name`), args...)
	if err != nil {
		return mapErr(err, what)
	}
	var changed []int
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.task, &k.core); err != nil {
			rows.Close()
			return mapErr(err, what)
		}
		i := at[k]
		res[i].Changed = true
		changed = append(changed, i)
	}
	if err := rows.Close(); err != nil {
		return mapErr(err, what)
	}

	// Every outcome's wait is over (also when its task is gone).
	with, args = valuesCTE(`tid, nm`, `(?, ?)`, keys)
	if _, err := tx.ExecContext(ctx, d.q(with+`DELETE FROM deployment_waits
		WHERE EXISTS (SELECT 1 FROM v WHERE v.tid = deployment_waits.task_id AND v.nm = deployment_waits.core)`), args...); err != nil {
		return mapErr(err, what)
	}

	// The cores whose current deployment this is take the outcome's status.
	var cores []string
	for _, i := range changed {
		if outs[i].CoreStatus != "" {
			cores = append(cores, outs[i].Core)
		}
	}
	if len(cores) == 0 {
		return nil
	}
	docs := map[string]deploy.Document{}
	if err := d.readDocuments(ctx, tx, cores, docs); err != nil {
		return err
	}
	byCore := map[string][]any{} // one row per core: the last outcome of it that applies
	var order []string
	for _, i := range changed {
		o := outs[i]
		if o.CoreStatus == "" || docs[o.Core].DeploymentID != o.DeploymentID || docs[o.Core].Core == "" {
			continue // superseded: the core's state belongs to a newer deployment
		}
		var name, version any // NULL: keep the reported template
		if o.Reported != nil {
			name, version = o.Reported.Name, o.Reported.Version
		}
		if _, seen := byCore[o.Core]; !seen {
			order = append(order, o.Core)
		}
		byCore[o.Core] = []any{o.Core, o.CoreStatus, o.CoreMessage, millis(o.Now), name, version}
	}
	if len(order) == 0 {
		return nil
	}
	coreRows := make([][]any, len(order))
	for n, c := range order {
		coreRows[n] = byCore[c]
	}
	with, args = valuesCTE(`nm, st, msg, upd, rname, rversion`, `(?, ?, ?, CAST(? AS BIGINT), ?, CAST(? AS INTEGER))`, coreRows)
	if _, err := tx.ExecContext(ctx, d.q(with+`UPDATE cores SET deployment_status = v.st, deployment_status_message = v.msg,
		updated_at = v.upd, reported_name = COALESCE(v.rname, cores.reported_name),
		reported_version = COALESCE(v.rversion, cores.reported_version)
		FROM v WHERE cores.name = v.nm`), args...); err != nil {
		return mapErr(err, fmt.Sprintf("set the deployment status of %d cores", len(order)))
	}
	return nil
}
