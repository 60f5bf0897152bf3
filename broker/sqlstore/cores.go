package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/cores/corestore"
)

// CoreStore keeps core records and their artifact records (corestore.Store).
type CoreStore struct{ d *DB }

var _ corestore.Store = (*CoreStore)(nil)

// Cores returns the core store backed by this database.
func (d *DB) Cores() *CoreStore { return &CoreStore{d: d} }

const coreColumns = `name, desired_name, desired_version, reported_name, reported_version, deployment_status, deployment_status_message, created_at, updated_at`

// notFailedSQL lists the deploymentStatus values that do not mean a failed
// last deployment: exactly those for which cdf.DeploymentFailed is false
// (None, "", IN_PROGRESS, SUCCESSFUL); every other value is a failure.
const notFailedSQL = `('None', '', 'SUCCESSFUL', 'IN_PROGRESS')`

// EnsureCores inserts default records for names without one; existing
// records keep their template state. Each chunk of up to batchRows names
// is one multi-row INSERT … ON CONFLICT DO NOTHING, all in one transaction.
func (s *CoreStore) EnsureCores(ctx context.Context, names []string, now time.Time) error {
	if len(names) == 0 {
		return nil
	}
	return s.d.InTx(ctx, func(tx *sql.Tx) error {
		for _, c := range chunks(len(names)) {
			chunk := names[c[0]:c[1]]
			rows := make([][]any, len(chunk))
			for i, n := range chunk {
				rows[i] = []any{n}
			}
			with, args := valuesCTE(`name`, `(?)`, rows)
			args = append(args, corestore.NoTemplate, corestore.NoTemplate, corestore.NoDeploymentStatus, millis(now))
			if _, err := tx.ExecContext(ctx, s.d.q(with+`INSERT INTO cores (name, desired_name, desired_version, reported_name, reported_version, deployment_status, created_at, updated_at)
				SELECT name, CAST(? AS TEXT), 0, CAST(? AS TEXT), 0, CAST(? AS TEXT), CAST(? AS BIGINT), 0 FROM v WHERE name IS NOT NULL
				ON CONFLICT (name) DO NOTHING`), args...); err != nil {
				return mapErr(err, fmt.Sprintf("record %d cores", len(chunk)))
			}
		}
		return nil
	})
}

// GetCore returns a core or errkind.NotFound. It reads through the read
// pool (the API's GET /cores/{name}); callers see every committed write.
func (s *CoreStore) GetCore(ctx context.Context, name string) (corestore.Record, error) {
	row := s.d.r(ctx).QueryRowContext(ctx, s.d.q(`SELECT `+coreColumns+` FROM cores WHERE name = ?`), name)
	r, err := scanCore(row)
	if err != nil {
		return r, mapErr(err, fmt.Sprintf("core %s", name))
	}
	return r, nil
}

// ListCores returns cores in name order after the cursor, filtered as spec
// §2.3 says, through the read pool.
func (s *CoreStore) ListCores(ctx context.Context, f corestore.Filter, count int, after string) ([]corestore.Record, bool, error) {
	var where []string
	var args []any
	switch {
	case f.FailedOnly:
		where = append(where, `deployment_status NOT IN `+notFailedSQL)
		if f.TemplateName != "" {
			where = append(where, `desired_name = ?`)
			args = append(args, f.TemplateName)
			if f.TemplateVersion != nil {
				where = append(where, `desired_version = ?`)
				args = append(args, *f.TemplateVersion)
			}
		}
	case f.TemplateVersion != nil:
		if f.TemplateName == "" {
			return []corestore.Record{}, false, nil // a version without a name matches nothing
		}
		where = append(where, `desired_name = ?`, `desired_version = ?`)
		args = append(args, f.TemplateName, *f.TemplateVersion)
	case f.TemplateName != "":
		where = append(where, `desired_name = ?`)
		args = append(args, f.TemplateName)
	}
	if after != "" {
		where = append(where, `name > ?`)
		args = append(args, after)
	}
	query := `SELECT ` + coreColumns + ` FROM cores`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, ` AND `)
	}
	query += ` ORDER BY name LIMIT ?`
	args = append(args, count+1)
	rows, err := s.d.r(ctx).QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return nil, false, mapErr(err, "list cores")
	}
	defer rows.Close()
	out := []corestore.Record{}
	for rows.Next() {
		r, err := scanCore(rows)
		if err != nil {
			return nil, false, mapErr(err, "list cores")
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, mapErr(err, "list cores")
	}
	more := len(out) > count
	if more {
		out = out[:count]
	}
	return out, more, nil
}

// insertCoreArtifact may be deferred by a Create batch's transaction (deferred.go).
var insertCoreArtifact = newInsert("core_artifacts", []string{"core", "kind", "bucket", "key", "created_at"}, 2, true,
	"ON CONFLICT (core, kind) DO UPDATE SET bucket = excluded.bucket, key = excluded.key, created_at = excluded.created_at")

// PutArtifact records or replaces an artifact of a core.
func (s *CoreStore) PutArtifact(ctx context.Context, a corestore.ArtifactRecord) error {
	err := s.d.insert(ctx, &insertCoreArtifact, a.Core, a.Kind, a.Bucket, a.Key, millis(a.CreatedAt))
	return mapErr(err, fmt.Sprintf("record %s artifact of core %s", a.Kind, a.Core))
}

// ListArtifacts returns a core's artifacts, by kind, through the read pool.
func (s *CoreStore) ListArtifacts(ctx context.Context, core string) ([]corestore.ArtifactRecord, error) {
	rows, err := s.d.r(ctx).QueryContext(ctx, s.d.q(`SELECT core, kind, bucket, key, created_at FROM core_artifacts WHERE core = ? ORDER BY kind`), core)
	if err != nil {
		return nil, mapErr(err, fmt.Sprintf("artifacts of core %s", core))
	}
	defer rows.Close()
	var out []corestore.ArtifactRecord
	for rows.Next() {
		var a corestore.ArtifactRecord
		var created int64
		if err := rows.Scan(&a.Core, &a.Kind, &a.Bucket, &a.Key, &created); err != nil {
			return nil, mapErr(err, fmt.Sprintf("artifacts of core %s", core))
		}
		a.CreatedAt = fromMillis(created)
		out = append(out, a)
	}
	return out, mapErr(rows.Err(), fmt.Sprintf("artifacts of core %s", core))
}

// DeleteCore removes a core and its artifact records; errkind.NotFound if missing.
func (s *CoreStore) DeleteCore(ctx context.Context, name string) error {
	return s.d.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.d.q(`DELETE FROM core_artifacts WHERE core = ?`), name); err != nil {
			return mapErr(err, fmt.Sprintf("delete artifacts of core %s", name))
		}
		res, err := tx.ExecContext(ctx, s.d.q(`DELETE FROM cores WHERE name = ?`), name)
		if err != nil {
			return mapErr(err, fmt.Sprintf("delete core %s", name))
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mapErr(sql.ErrNoRows, fmt.Sprintf("core %s", name))
		}
		return nil
	})
}

func scanCore(row interface{ Scan(dest ...any) error }) (corestore.Record, error) {
	var r corestore.Record
	var created, updated int64
	err := row.Scan(&r.Name, &r.DesiredName, &r.DesiredVersion, &r.ReportedName, &r.ReportedVersion,
		&r.DeploymentStatus, &r.DeploymentStatusMessage, &created, &updated)
	r.CreatedAt, r.UpdatedAt = fromMillis(created), fromMillis(updated)
	return r, err
}
