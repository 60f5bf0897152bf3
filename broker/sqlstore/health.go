package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/health"
)

// HealthStore keeps the latest health report and connection state of each
// core (health.Store), one row per core in core_health.
type HealthStore struct{ d *DB }

var _ health.Store = (*HealthStore)(nil)

// Health returns the health store backed by this database.
func (d *DB) Health() *HealthStore { return &HealthStore{d: d} }

// reportConflictSQL is the ON CONFLICT clause of storing a health report,
// shared by putReportSQL and its multi-row form (health_batch.go): a report
// older than the stored one changes nothing, last-seen only moves forward,
// and registry_synced is kept only while the fields the registry holds are
// unchanged (column references in SET are the old row's values).
const reportConflictSQL = `ON CONFLICT (core) DO UPDATE SET
	status = excluded.status, nucleus_state = excluded.nucleus_state, nucleus_version = excluded.nucleus_version,
	components = excluded.components, effective_deployments = excluded.effective_deployments,
	platform = excluded.platform, architecture = excluded.architecture, agent_version = excluded.agent_version,
	uptime_seconds = excluded.uptime_seconds, interval_seconds = excluded.interval_seconds, system = excluded.system,
	certificate_not_after = excluded.certificate_not_after, reported_at = excluded.reported_at,
	received_at = excluded.received_at, connection_state = 'ONLINE',
	last_seen_at = CASE WHEN excluded.last_seen_at > core_health.last_seen_at THEN excluded.last_seen_at ELSE core_health.last_seen_at END,
	registry_synced = CASE WHEN core_health.status = excluded.status AND core_health.nucleus_version = excluded.nucleus_version
		AND core_health.platform = excluded.platform AND core_health.architecture = excluded.architecture
		THEN core_health.registry_synced ELSE 0 END
WHERE excluded.reported_at >= core_health.reported_at`

// putReportSQL inserts or replaces the core's row in one statement. The
// SELECT from cores makes an unknown core insert nothing; the DO UPDATE
// WHERE skips a report older than the stored one; registry_synced is kept
// only while the fields the registry holds are unchanged (column references
// in SET are the old row's values). Numbers are CAST because PostgreSQL
// types the parameters of a SELECT list as text.
const putReportSQL = `INSERT INTO core_health (core, status, nucleus_state, nucleus_version, components,
	effective_deployments, platform, architecture, agent_version, uptime_seconds, interval_seconds, system,
	certificate_not_after, reported_at, received_at, connection_state, last_seen_at, registry_synced)
SELECT name, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS BIGINT), CAST(? AS INTEGER), ?,
	CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), 'ONLINE', CAST(? AS BIGINT), 0 FROM cores WHERE name = ?
` + reportConflictSQL + `
RETURNING registry_synced`

// PutReport stores r as its core's latest report unless a later one is
// stored (health.Store).
func (s *HealthStore) PutReport(ctx context.Context, r health.Report) (stored, sync bool, err error) {
	what := fmt.Sprintf("store health report of core %s", r.Core)
	components, err := json.Marshal(healthList(r.Components))
	if err != nil {
		return false, false, fmt.Errorf("%s: encode components: %w", what, err)
	}
	deployments, err := json.Marshal(healthList(r.EffectiveDeployments))
	if err != nil {
		return false, false, fmt.Errorf("%s: encode effective deployments: %w", what, err)
	}
	system, err := json.Marshal(r.System)
	if err != nil {
		return false, false, fmt.Errorf("%s: encode system stats: %w", what, err)
	}
	var synced int
	err = s.d.w(ctx).QueryRowContext(ctx, s.d.q(putReportSQL),
		r.Status, r.NucleusState, r.NucleusVersion, string(components), string(deployments),
		r.Platform, r.Architecture, r.AgentVersion, r.UptimeSeconds, r.IntervalSeconds, string(system),
		millis(r.CertificateNotAfter), millis(r.ReportedAt), millis(r.ReceivedAt), millis(r.ReceivedAt), r.Core,
	).Scan(&synced)
	if errors.Is(err, sql.ErrNoRows) {
		// Nothing written: either the stored report is newer, or there is no such core.
		if err := s.coreExists(ctx, r.Core); err != nil {
			return false, false, err
		}
		return false, false, nil
	}
	if err != nil {
		return false, false, mapErr(err, what)
	}
	return true, synced == 0, nil
}

// MarkRegistrySynced sets registry_synced when the row still holds r's
// registry fields (health.Store).
func (s *HealthStore) MarkRegistrySynced(ctx context.Context, r health.Report) error {
	_, err := s.d.w(ctx).ExecContext(ctx, s.d.q(`UPDATE core_health SET registry_synced = 1
		WHERE core = ? AND status = ? AND nucleus_version = ? AND platform = ? AND architecture = ?`),
		r.Core, r.Status, r.NucleusVersion, r.Platform, r.Architecture)
	return mapErr(err, fmt.Sprintf("mark registry synced for core %s", r.Core))
}

// SetConnection sets a core's connection state and moves last-seen forward
// to seen when it is later (health.Store). errkind.NotFound for an unknown core.
func (s *HealthStore) SetConnection(ctx context.Context, core, state string, seen time.Time) error {
	res, err := s.d.w(ctx).ExecContext(ctx, s.d.q(`INSERT INTO core_health (core, connection_state, last_seen_at)
		SELECT name, ?, CAST(? AS BIGINT) FROM cores WHERE name = ?
		ON CONFLICT (core) DO UPDATE SET connection_state = excluded.connection_state,
		last_seen_at = CASE WHEN excluded.last_seen_at > core_health.last_seen_at THEN excluded.last_seen_at ELSE core_health.last_seen_at END`),
		state, millis(seen), core)
	if err != nil {
		return mapErr(err, fmt.Sprintf("set connection of core %s", core))
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errkind.New(errkind.NotFound, "core %s not found", core)
	}
	return nil
}

// GetHealth returns a core's row or errkind.NotFound (health.Store), through
// the read pool (the device block of GET /cores/{name}).
func (s *HealthStore) GetHealth(ctx context.Context, core string) (health.Record, error) {
	var rec health.Record
	var components, deployments, system string
	var certNotAfter, reported, received, seen int64
	err := s.d.r(ctx).QueryRowContext(ctx, s.d.q(`SELECT core, status, nucleus_state, nucleus_version, components,
		effective_deployments, platform, architecture, agent_version, uptime_seconds, interval_seconds, system,
		certificate_not_after, reported_at, received_at, connection_state, last_seen_at
		FROM core_health WHERE core = ?`), core).Scan(
		&rec.Core, &rec.Status, &rec.NucleusState, &rec.NucleusVersion, &components,
		&deployments, &rec.Platform, &rec.Architecture, &rec.AgentVersion, &rec.UptimeSeconds, &rec.IntervalSeconds, &system,
		&certNotAfter, &reported, &received, &rec.Connection, &seen)
	if err != nil {
		return health.Record{}, mapErr(err, fmt.Sprintf("health of core %s", core))
	}
	if err := json.Unmarshal([]byte(components), &rec.Components); err != nil {
		return health.Record{}, fmt.Errorf("health of core %s: decode components: %w", core, err)
	}
	if err := json.Unmarshal([]byte(deployments), &rec.EffectiveDeployments); err != nil {
		return health.Record{}, fmt.Errorf("health of core %s: decode effective deployments: %w", core, err)
	}
	if err := json.Unmarshal([]byte(system), &rec.System); err != nil {
		return health.Record{}, fmt.Errorf("health of core %s: decode system stats: %w", core, err)
	}
	rec.CertificateNotAfter = fromMillis(certNotAfter)
	rec.ReportedAt, rec.ReceivedAt, rec.LastSeenAt = fromMillis(reported), fromMillis(received), fromMillis(seen)
	return rec, nil
}

func (s *HealthStore) coreExists(ctx context.Context, core string) error {
	var n int
	err := s.d.w(ctx).QueryRowContext(ctx, s.d.q(`SELECT COUNT(*) FROM cores WHERE name = ?`), core).Scan(&n)
	if err != nil {
		return mapErr(err, fmt.Sprintf("core %s", core))
	}
	if n == 0 {
		return errkind.New(errkind.NotFound, "core %s not found", core)
	}
	return nil
}

// healthList makes a nil slice encode as [] rather than null.
func healthList[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
