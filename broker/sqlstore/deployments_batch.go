package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
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
	args := append([]any{name, version, status, millis(now)}, stringArgs(cores)...)
	_, err := s.d.sql.ExecContext(ctx, s.d.q(`UPDATE cores SET desired_name = ?, desired_version = ?, deployment_status = ?,
		deployment_status_message = '', updated_at = ? WHERE name IN (`+placeholders(len(cores))+`)`), args...)
	return mapErr(err, fmt.Sprintf("set desired template of %d cores", len(cores)))
}

// PutDeployments stores the waits, then the documents of many cores, in one
// transaction, and returns the documents they replaced, by core.
func (d *DB) PutDeployments(ctx context.Context, waits []deploy.Wait, docs []deploy.Document) (map[string]deploy.Document, error) {
	prev := map[string]deploy.Document{}
	err := d.InTx(ctx, func(tx *sql.Tx) error {
		clear(prev) // a retried transaction starts over
		if len(waits) > 0 {
			stmt, err := tx.PrepareContext(ctx, d.q(`INSERT INTO deployment_waits (task_id, core, batch, deployment_id, deadline) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (task_id, core) DO NOTHING`))
			if err != nil {
				return mapErr(err, "record deployment waits")
			}
			defer stmt.Close()
			for _, w := range waits {
				if _, err := stmt.ExecContext(ctx, w.TaskID, w.Core, w.Batch, w.DeploymentID, millis(w.Deadline)); err != nil {
					return mapErr(err, fmt.Sprintf("record the wait of core %s in task %s", w.Core, w.TaskID))
				}
			}
		}
		if len(docs) == 0 {
			return nil
		}
		cores := make([]string, len(docs))
		for i, doc := range docs {
			cores[i] = doc.Core
		}
		rows, err := tx.QueryContext(ctx, d.q(`SELECT `+documentColumns+` FROM deployment_documents WHERE core IN (`+placeholders(len(cores))+`)`), stringArgs(cores)...)
		if err != nil {
			return mapErr(err, fmt.Sprintf("deployment documents of %d cores", len(cores)))
		}
		for rows.Next() {
			doc, err := scanDocument(rows)
			if err != nil {
				rows.Close()
				return mapErr(err, fmt.Sprintf("deployment documents of %d cores", len(cores)))
			}
			prev[doc.Core] = doc
		}
		if err := rows.Close(); err != nil {
			return mapErr(err, fmt.Sprintf("deployment documents of %d cores", len(cores)))
		}
		if err := rows.Err(); err != nil {
			return mapErr(err, fmt.Sprintf("deployment documents of %d cores", len(cores)))
		}
		stmt, err := tx.PrepareContext(ctx, d.q(`INSERT INTO deployment_documents (`+documentColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (core) DO UPDATE SET task_id = excluded.task_id, deployment_id = excluded.deployment_id,
			template_name = excluded.template_name, template_version = excluded.template_version,
			document = excluded.document, updated_at = excluded.updated_at`))
		if err != nil {
			return mapErr(err, "store deployment documents")
		}
		defer stmt.Close()
		for _, doc := range docs {
			if _, err := stmt.ExecContext(ctx, doc.Core, doc.TaskID, doc.DeploymentID, doc.TemplateName, doc.TemplateVersion,
				string(doc.Payload), millis(doc.UpdatedAt)); err != nil {
				return mapErr(err, fmt.Sprintf("store deployment document of core %s", doc.Core))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return prev, nil
}

// WaitsForCores returns the waits of the given cores, by task and core.
func (d *DB) WaitsForCores(ctx context.Context, cores []string) ([]deploy.Wait, error) {
	if len(cores) == 0 {
		return nil, nil
	}
	return d.queryWaits(ctx, fmt.Sprintf("waits of %d cores", len(cores)),
		`WHERE core IN (`+placeholders(len(cores))+`) ORDER BY task_id, core`, stringArgs(cores)...)
}
