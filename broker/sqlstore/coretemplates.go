package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Template state of core records, written by deployments (spec §5.5): the
// desired template when a deployment starts, the reported template when it
// succeeds, and the deploymentStatus of the last deployment.

// SetDesiredTemplate sets a core's desired template and deploymentStatus and
// clears its deploymentStatusMessage; errkind.NotFound if the core has no record.
func (s *CoreStore) SetDesiredTemplate(ctx context.Context, core, name string, version int, status string, now time.Time) error {
	res, err := s.d.w(ctx).ExecContext(ctx, s.d.q(`UPDATE cores SET desired_name = ?, desired_version = ?, deployment_status = ?,
		deployment_status_message = '', updated_at = ? WHERE name = ?`), name, version, status, millis(now), core)
	if err != nil {
		return mapErr(err, fmt.Sprintf("set desired template of core %s", core))
	}
	return deployMustAffect(res, fmt.Sprintf("core %s", core))
}

// SetDeploymentStatus sets a core's deploymentStatus and message;
// errkind.NotFound if the core has no record.
func (s *CoreStore) SetDeploymentStatus(ctx context.Context, core, status, message string, now time.Time) error {
	return setDeploymentOutcome(ctx, s.d, s.d.w(ctx), core, status, message, nil, now)
}

// SetReportedTemplate sets the template a core last deployed successfully.
func (s *CoreStore) SetReportedTemplate(ctx context.Context, core, name string, version int, now time.Time) error {
	res, err := s.d.w(ctx).ExecContext(ctx, s.d.q(`UPDATE cores SET reported_name = ?, reported_version = ?, updated_at = ? WHERE name = ?`),
		name, version, millis(now), core)
	if err != nil {
		return mapErr(err, fmt.Sprintf("set reported template of core %s", core))
	}
	return deployMustAffect(res, fmt.Sprintf("core %s", core))
}

// setDeploymentOutcome sets deploymentStatus and message and, when reported
// is set, the reported template, on q (a transaction or the pool).
func setDeploymentOutcome(ctx context.Context, d *DB, q Querier, core, status, message string, reported *cdf.TemplateRef, now time.Time) error {
	query := `UPDATE cores SET deployment_status = ?, deployment_status_message = ?, updated_at = ? WHERE name = ?`
	args := []any{status, message, millis(now), core}
	if reported != nil {
		query = `UPDATE cores SET deployment_status = ?, deployment_status_message = ?, updated_at = ?, reported_name = ?, reported_version = ? WHERE name = ?`
		args = []any{status, message, millis(now), reported.Name, reported.Version, core}
	}
	res, err := q.ExecContext(ctx, d.q(query), args...)
	if err != nil {
		return mapErr(err, fmt.Sprintf("set deployment status of core %s", core))
	}
	return deployMustAffect(res, fmt.Sprintf("core %s", core))
}

// deployMustAffect turns an UPDATE that matched no row into errkind.NotFound.
func deployMustAffect(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return mapErr(err, what)
	}
	if n == 0 {
		return mapErr(sql.ErrNoRows, what)
	}
	return nil
}
