package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

var _ templates.Store = (*DB)(nil)

const templateColumns = `v.name, v.version, v.components, v.job_config, v.deployment_policies, v.created_at, v.updated_at`

// CreateTemplate stores version 1 of a new template; errkind.Conflict if
// one of that name exists.
func (d *DB) CreateTemplate(ctx context.Context, t cdf.Template) error {
	components, err := json.Marshal(t.Components)
	if err != nil {
		return fmt.Errorf("encode components of template %q: %w", t.Name, err)
	}
	return d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, d.q(`INSERT INTO templates (name, latest, created_at) VALUES (?, 1, ?)`),
			t.Name, millis(t.CreatedAt.Time)); err != nil {
			return mapErr(err, fmt.Sprintf("create template %s", t.Name))
		}
		_, err := tx.ExecContext(ctx, d.q(`INSERT INTO template_versions (name, version, components, job_config, deployment_policies, created_at, updated_at) VALUES (?, 1, ?, ?, ?, ?, 0)`),
			t.Name, string(components), string(t.JobConfig), string(t.DeploymentPolicies), millis(t.CreatedAt.Time))
		return mapErr(err, fmt.Sprintf("create template %s version 1", t.Name))
	})
}

// AddTemplateVersion stores t as the next version of an existing template,
// keeping its createdAt, and returns what it stored.
func (d *DB) AddTemplateVersion(ctx context.Context, t cdf.Template) (cdf.Template, error) {
	components, err := json.Marshal(t.Components)
	if err != nil {
		return cdf.Template{}, fmt.Errorf("encode components of template %q: %w", t.Name, err)
	}
	err = d.InTx(ctx, func(tx *sql.Tx) error {
		var latest int
		var created int64
		err := tx.QueryRowContext(ctx, d.q(`SELECT latest, created_at FROM templates WHERE name = ?`), t.Name).Scan(&latest, &created)
		if err != nil {
			return mapErr(err, fmt.Sprintf("template %s", t.Name))
		}
		t.Version = latest + 1
		t.CreatedAt = cdf.At(fromMillis(created))
		if _, err := tx.ExecContext(ctx, d.q(`INSERT INTO template_versions (name, version, components, job_config, deployment_policies, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`),
			t.Name, t.Version, string(components), string(t.JobConfig), string(t.DeploymentPolicies), created, millis(t.UpdatedAt.Time)); err != nil {
			return mapErr(err, fmt.Sprintf("add template %s version %d", t.Name, t.Version))
		}
		_, err = tx.ExecContext(ctx, d.q(`UPDATE templates SET latest = ? WHERE name = ?`), t.Version, t.Name)
		return mapErr(err, fmt.Sprintf("update template %s", t.Name))
	})
	if err != nil {
		return cdf.Template{}, err
	}
	return t, nil
}

// GetTemplate returns one version of a template, or the latest when
// version is 0; errkind.NotFound if missing. It reads through the read pool
// (template versions are immutable once stored).
func (d *DB) GetTemplate(ctx context.Context, name string, version int) (cdf.Template, error) {
	var row *sql.Row
	if version == 0 {
		row = d.r(ctx).QueryRowContext(ctx, d.q(`SELECT `+templateColumns+` FROM templates t JOIN template_versions v ON v.name = t.name AND v.version = t.latest WHERE t.name = ?`), name)
	} else {
		row = d.r(ctx).QueryRowContext(ctx, d.q(`SELECT `+templateColumns+` FROM template_versions v WHERE v.name = ? AND v.version = ?`), name, version)
	}
	t, err := scanTemplate(row)
	if errors.Is(err, sql.ErrNoRows) {
		if version == 0 {
			return cdf.Template{}, errkind.New(errkind.NotFound, "template %s not found", name)
		}
		return cdf.Template{}, errkind.New(errkind.NotFound, "template %s version %d not found", name, version)
	}
	if err != nil {
		return cdf.Template{}, mapErr(err, fmt.Sprintf("get template %s", name))
	}
	return t, nil
}

// ListTemplates returns up to count latest template versions by name after
// the cursor, and whether more exist.
func (d *DB) ListTemplates(ctx context.Context, count int, after string) ([]cdf.Template, bool, error) {
	if count < 1 {
		count = 100
	}
	return d.queryTemplates(ctx, count, `SELECT `+templateColumns+` FROM templates t JOIN template_versions v ON v.name = t.name AND v.version = t.latest WHERE t.name > ? ORDER BY t.name LIMIT ?`,
		after, count+1)
}

// ListTemplateVersions returns up to count versions of a template in
// numeric order after version `after`, and whether more exist.
func (d *DB) ListTemplateVersions(ctx context.Context, name string, count, after int) ([]cdf.Template, bool, error) {
	if count < 1 {
		count = 100
	}
	return d.queryTemplates(ctx, count, `SELECT `+templateColumns+` FROM template_versions v WHERE v.name = ? AND v.version > ? ORDER BY v.version LIMIT ?`,
		name, after, count+1)
}

// DeleteTemplate removes every version of a template; a missing template
// is not an error.
func (d *DB) DeleteTemplate(ctx context.Context, name string) error {
	return d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, d.q(`DELETE FROM template_versions WHERE name = ?`), name); err != nil {
			return mapErr(err, fmt.Sprintf("delete versions of template %s", name))
		}
		_, err := tx.ExecContext(ctx, d.q(`DELETE FROM templates WHERE name = ?`), name)
		return mapErr(err, fmt.Sprintf("delete template %s", name))
	})
}

// queryTemplates runs a template list query through the read pool.
func (d *DB) queryTemplates(ctx context.Context, count int, query string, args ...any) ([]cdf.Template, bool, error) {
	rows, err := d.r(ctx).QueryContext(ctx, d.q(query), args...)
	if err != nil {
		return nil, false, mapErr(err, "list templates")
	}
	defer rows.Close()
	var out []cdf.Template
	for rows.Next() {
		t, err := scanTemplate(rows)
		if err != nil {
			return nil, false, mapErr(err, "list templates")
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, false, mapErr(err, "list templates")
	}
	more := len(out) > count
	if more {
		out = out[:count]
	}
	return out, more, nil
}

func scanTemplate(s interface{ Scan(dest ...any) error }) (cdf.Template, error) {
	var (
		t                          cdf.Template
		components, jobConfig, dps string
		created, updated           int64
	)
	if err := s.Scan(&t.Name, &t.Version, &components, &jobConfig, &dps, &created, &updated); err != nil {
		return cdf.Template{}, err
	}
	if err := json.Unmarshal([]byte(components), &t.Components); err != nil {
		return cdf.Template{}, fmt.Errorf("decode components of template %s version %d: %w", t.Name, t.Version, err)
	}
	if jobConfig != "" {
		t.JobConfig = json.RawMessage(jobConfig)
	}
	if dps != "" {
		t.DeploymentPolicies = json.RawMessage(dps)
	}
	if created != 0 {
		t.CreatedAt = cdf.At(fromMillis(created))
	}
	if updated != 0 {
		t.UpdatedAt = cdf.At(fromMillis(updated))
	}
	return t, nil
}
