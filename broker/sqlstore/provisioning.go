package sqlstore

import (
	"context"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provisioning"
)

// The DB is the provisioning service's template store.
var _ provisioning.Store = (*DB)(nil)

// CreateProvisioningTemplate stores a template only if the name is free.
func (d *DB) CreateProvisioningTemplate(ctx context.Context, name string, doc []byte, now time.Time) (bool, error) {
	res, err := d.w(ctx).ExecContext(ctx, d.q(`INSERT INTO provisioning_templates (name, document, created_at, updated_at)
		VALUES (?, ?, ?, 0) ON CONFLICT (name) DO NOTHING`), name, string(doc), millis(now))
	if err != nil {
		return false, mapErr(err, "create provisioning template "+name)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, mapErr(err, "create provisioning template "+name)
	}
	return n > 0, nil
}

// PutProvisioningTemplate creates or replaces a template.
func (d *DB) PutProvisioningTemplate(ctx context.Context, name string, doc []byte, now time.Time) (bool, error) {
	created, err := d.CreateProvisioningTemplate(ctx, name, doc, now)
	if err != nil || created {
		return created, err
	}
	res, err := d.w(ctx).ExecContext(ctx, d.q(`UPDATE provisioning_templates SET document = ?, updated_at = ? WHERE name = ?`),
		string(doc), millis(now), name)
	if err != nil {
		return false, mapErr(err, "replace provisioning template "+name)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		// Deleted between the insert and the update: store it as new.
		return d.CreateProvisioningTemplate(ctx, name, doc, now)
	}
	return false, nil
}

// GetProvisioningTemplate returns the document as stored.
func (d *DB) GetProvisioningTemplate(ctx context.Context, name string) ([]byte, error) {
	var doc string
	err := d.lookup(ctx).QueryRowContext(ctx, d.q(`SELECT document FROM provisioning_templates WHERE name = ?`), name).Scan(&doc)
	if err != nil {
		return nil, mapErr(err, "provisioning template "+name)
	}
	return []byte(doc), nil
}

// ListProvisioningTemplates lists every template, sorted by name.
func (d *DB) ListProvisioningTemplates(ctx context.Context) ([]provisioning.TemplateInfo, error) {
	rows, err := d.w(ctx).QueryContext(ctx, `SELECT name, created_at, updated_at FROM provisioning_templates ORDER BY name`)
	if err != nil {
		return nil, mapErr(err, "list provisioning templates")
	}
	defer rows.Close()
	var out []provisioning.TemplateInfo
	for rows.Next() {
		var (
			info             provisioning.TemplateInfo
			created, updated int64
		)
		if err := rows.Scan(&info.Name, &created, &updated); err != nil {
			return nil, mapErr(err, "list provisioning templates")
		}
		info.CreatedAt, info.UpdatedAt = fromMillis(created), fromMillis(updated)
		out = append(out, info)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(err, "list provisioning templates")
	}
	return out, nil
}

// DeleteProvisioningTemplate deletes a template, or returns errkind.NotFound.
func (d *DB) DeleteProvisioningTemplate(ctx context.Context, name string) error {
	res, err := d.w(ctx).ExecContext(ctx, d.q(`DELETE FROM provisioning_templates WHERE name = ?`), name)
	if err != nil {
		return mapErr(err, "delete provisioning template "+name)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errkind.New(errkind.NotFound, "provisioning template %q not found", name)
	}
	return nil
}
