package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/ggfleet/ggfleet/broker/deploy"
)

// Deployment batches: the per-core rows of a whole batch of deployment
// items written by a few statements in one transaction, instead of a few
// transactions per core.

// SetDesiredTemplates sets the desired template and deploymentStatus of
// many cores, and clears their deploymentStatusMessage, in one statement;
// cores without a record are skipped.
func (s *CoreStore) SetDesiredTemplates(ctx context.Context, cores []string, name string, version int, status string, now time.Time) error {
	if len(cores) == 0 {
		return nil
	}
	return s.d.InTx(ctx, func(tx *sql.Tx) error {
		return eachInList(cores, func(marks string, names []any) error {
			args := append([]any{name, version, status, millis(now)}, names...)
			_, err := tx.ExecContext(ctx, s.d.q(`UPDATE cores SET desired_name = ?, desired_version = ?, deployment_status = ?,
				deployment_status_message = '', updated_at = ? WHERE name IN (`+marks+`)`), args...)
			return mapErr(err, fmt.Sprintf("set desired template of %d cores", len(cores)))
		})
	})
}

// PutDeployments stores the waits, then the documents of many cores, in one
// transaction, and returns the documents they replaced, by core. Each chunk
// of up to batchRows rows is one multi-row INSERT … ON CONFLICT: a wait
// already stored (or given earlier) is kept; of two documents of one core
// the last is stored.
func (d *DB) PutDeployments(ctx context.Context, waits []deploy.Wait, docs []deploy.Document) (map[string]deploy.Document, error) {
	waitRows := make([][]any, 0, len(waits))
	seen := make(map[[2]string]bool, len(waits))
	for _, w := range waits {
		if k := [2]string{w.TaskID, w.Core}; !seen[k] {
			seen[k] = true
			waitRows = append(waitRows, []any{w.TaskID, w.Core, w.Batch, w.DeploymentID, millis(w.Deadline)})
		}
	}
	lastDoc := make(map[string]int, len(docs))
	for i, doc := range docs {
		lastDoc[doc.Core] = i
	}
	cores := make([]string, 0, len(lastDoc))
	docRows := make([][]any, 0, len(lastDoc))
	for i, doc := range docs {
		if lastDoc[doc.Core] != i {
			continue
		}
		cores = append(cores, doc.Core)
		docRows = append(docRows, []any{doc.Core, doc.TaskID, doc.DeploymentID, doc.TemplateName, doc.TemplateVersion,
			string(doc.Payload), millis(doc.UpdatedAt)})
	}
	prev := map[string]deploy.Document{}
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		clear(prev) // a retried transaction starts over
		for _, c := range chunks(len(waitRows)) {
			with, args := valuesCTE(`task_id, core, batch, deployment_id, deadline`,
				`(?, ?, CAST(? AS INTEGER), ?, CAST(? AS BIGINT))`, waitRows[c[0]:c[1]])
			if _, err := tx.ExecContext(ctx, d.q(with+`INSERT INTO deployment_waits (task_id, core, batch, deployment_id, deadline)
				SELECT task_id, core, batch, deployment_id, deadline FROM v WHERE core IS NOT NULL
				ON CONFLICT (task_id, core) DO NOTHING`), args...); err != nil {
				return mapErr(err, fmt.Sprintf("record the waits of %d cores", c[1]-c[0]))
			}
		}
		for _, c := range chunks(len(cores)) {
			chunk := cores[c[0]:c[1]]
			if err := d.readDocuments(ctx, tx, chunk, prev); err != nil {
				return err
			}
			with, args := valuesCTE(documentColumns, `(?, ?, ?, ?, CAST(? AS INTEGER), ?, CAST(? AS BIGINT))`, docRows[c[0]:c[1]])
			if _, err := tx.ExecContext(ctx, d.q(with+`INSERT INTO deployment_documents (`+documentColumns+`)
				SELECT `+documentColumns+` FROM v WHERE core IS NOT NULL
				ON CONFLICT (core) DO UPDATE SET task_id = excluded.task_id, deployment_id = excluded.deployment_id,
				template_name = excluded.template_name, template_version = excluded.template_version,
				document = excluded.document, updated_at = excluded.updated_at`), args...); err != nil {
				return mapErr(err, fmt.Sprintf("store the deployment documents of %d cores", len(chunk)))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return prev, nil
}

// readDocuments adds to docs the stored deployment documents of cores.
func (d *DB) readDocuments(ctx context.Context, tx *sql.Tx, cores []string, docs map[string]deploy.Document) error {
	what := fmt.Sprintf("deployment documents of %d cores", len(cores))
	marks, args := inList(cores)
	rows, err := tx.QueryContext(ctx, d.q(`SELECT `+documentColumns+` FROM deployment_documents WHERE core IN (`+marks+`)`), args...)
	if err != nil {
		return mapErr(err, what)
	}
	defer rows.Close()
	for rows.Next() {
		doc, err := scanDocument(rows)
		if err != nil {
			return mapErr(err, what)
		}
		docs[doc.Core] = doc
	}
	return mapErr(rows.Err(), what)
}

// WaitsForCores returns the waits of the given cores, by task and core.
func (d *DB) WaitsForCores(ctx context.Context, cores []string) ([]deploy.Wait, error) {
	if len(cores) == 0 {
		return nil, nil
	}
	var out []deploy.Wait
	err := eachInList(cores, func(marks string, args []any) error {
		waits, err := d.queryWaits(ctx, fmt.Sprintf("waits of %d cores", len(cores)),
			`WHERE core IN (`+marks+`) ORDER BY task_id, core`, args...)
		out = append(out, waits...)
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b deploy.Wait) int {
		return cmp.Or(cmp.Compare(a.TaskID, b.TaskID), cmp.Compare(a.Core, b.Core))
	})
	return out, nil
}
