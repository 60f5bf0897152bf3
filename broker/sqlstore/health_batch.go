package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/health"
)

// Group commit of health reports (health.BatchStore): the reports that
// arrive together are stored by one multi-row UPSERT, so a burst from a
// thousand agents costs a few commits instead of a thousand.

var _ health.BatchStore = (*HealthStore)(nil)

// putReportsHead and putReportsTail frame putReportSQL's multi-row form:
// the same columns, the same ON CONFLICT clause (reportConflictSQL), rows
// from a VALUES list joined with cores so that unknown cores insert
// nothing. VALUES columns are named column1… on both engines. ORDER BY
// takes the rows' locks in name order, so two replicas' batches on
// PostgreSQL cannot deadlock each other. WHERE true resolves SQLite's
// parsing ambiguity between a join's ON and ON CONFLICT.
const (
	putReportsHead = `INSERT INTO core_health (core, status, nucleus_state, nucleus_version, components,
	effective_deployments, platform, architecture, agent_version, uptime_seconds, interval_seconds, system,
	certificate_not_after, reported_at, received_at, connection_state, last_seen_at, registry_synced)
SELECT cores.name, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, v.column9,
	v.column10, v.column11, v.column12, v.column13, v.column14, v.column15, 'ONLINE', v.column16, 0
FROM (VALUES `
	putReportsRow  = `(?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS BIGINT), CAST(? AS INTEGER), ?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT))`
	putReportsTail = `) AS v JOIN cores ON cores.name = v.column1
WHERE true
ORDER BY cores.name
` + reportConflictSQL + `
RETURNING core, registry_synced`
)

// reportRow is one report ready for the statement.
type reportRow struct {
	i    int // index in PutReports' argument
	args []any
}

// PutReports stores rs in one transaction, each report with PutReport's
// outcome (health.BatchStore). Of several reports of one core only the one
// with the latest ReportedAt (the last on a tie) can be stored; the others
// get Stored false, as PutReport gives a report older than the stored one.
// Unknown cores get errkind.NotFound in their results; a report that cannot
// be encoded gets its error alone. The returned error means nothing was
// stored.
func (s *HealthStore) PutReports(ctx context.Context, rs []health.Report) ([]health.PutResult, error) {
	out := make([]health.PutResult, len(rs))
	latest := make(map[string]int, len(rs)) // core → index of the report that may be stored
	rows := make(map[string]reportRow, len(rs))
	for i, r := range rs {
		args, err := reportArgs(r)
		if err != nil {
			out[i].Err = err
			continue
		}
		if j, ok := latest[r.Core]; ok && r.ReportedAt.Before(rs[j].ReportedAt) {
			continue
		}
		latest[r.Core] = i
		rows[r.Core] = reportRow{i: i, args: args}
	}
	if len(rows) == 0 {
		return out, nil
	}
	names := make([]string, 0, len(rows))
	for name := range rows {
		names = append(names, name)
	}
	sort.Strings(names)

	synced := make(map[string]int, len(names)) // stored cores → registry_synced
	var missing []string                       // cores given but not stored
	exists := make(map[string]bool)            // of missing, the cores that exist
	store := func(q Querier) error {
		for start := 0; start < len(names); start += batchRows {
			chunk := names[start:min(start+batchRows, len(names))]
			if err := s.putChunk(ctx, q, chunk, rows, synced); err != nil {
				return err
			}
		}
		for _, name := range names {
			if _, ok := synced[name]; !ok {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		// Nothing written for these: either the stored report is newer, or
		// there is no such core.
		return s.existingCores(ctx, q, missing, exists)
	}
	var err error
	if len(names) <= batchRows {
		err = store(s.d.w(ctx)) // one statement is one transaction
	} else {
		err = s.d.InTx(ctx, func(tx *sql.Tx) error { return store(tx) })
	}
	if err != nil {
		return nil, err
	}

	for i, r := range rs {
		if out[i].Err != nil {
			continue
		}
		n, ok := synced[r.Core]
		switch {
		case ok && latest[r.Core] == i:
			out[i] = health.PutResult{Stored: true, Sync: n == 0}
		case ok || exists[r.Core]:
			out[i] = health.PutResult{} // older than the stored report
		default:
			out[i].Err = errkind.New(errkind.NotFound, "core %s not found", r.Core)
		}
	}
	return out, nil
}

// putChunk stores the rows of names by one statement and records in synced
// the registry_synced of every core it stored.
func (s *HealthStore) putChunk(ctx context.Context, q Querier, names []string, rows map[string]reportRow, synced map[string]int) error {
	vals := make([][]any, len(names))
	for k, name := range names {
		vals[k] = rows[name].args
	}
	list, args := valuesList(putReportsRow, vals) // padding rows have a NULL core: they join no core
	what := fmt.Sprintf("store %d health reports", len(names))
	res, err := q.QueryContext(ctx, s.d.q(putReportsHead+list+putReportsTail), args...)
	if err != nil {
		return mapErr(err, what)
	}
	defer res.Close()
	for res.Next() {
		var core string
		var n int
		if err := res.Scan(&core, &n); err != nil {
			return mapErr(err, what)
		}
		synced[core] = n
	}
	if err := res.Err(); err != nil {
		return mapErr(err, what)
	}
	return nil
}

// existingCores marks in exists which of names are cores.
func (s *HealthStore) existingCores(ctx context.Context, q Querier, names []string, exists map[string]bool) error {
	return eachInList(names, func(marks string, args []any) error {
		what := fmt.Sprintf("look up %d cores", len(names))
		return s.d.markNames(ctx, q, what, `SELECT name FROM cores WHERE name IN (`+marks+`)`, args, exists)
	})
}

// markNames runs query, whose rows are one name each, through q and sets
// each name true in into.
func (d *DB) markNames(ctx context.Context, q Querier, what, query string, args []any, into map[string]bool) error {
	rows, err := q.QueryContext(ctx, d.q(query), args...)
	if err != nil {
		return mapErr(err, what)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return mapErr(err, what)
		}
		into[name] = true
	}
	return mapErr(rows.Err(), what)
}

// reportArgs encodes r as the 16 parameters of putReportsRow, in the order
// of putReportSQL's.
func reportArgs(r health.Report) ([]any, error) {
	what := fmt.Sprintf("store health report of core %s", r.Core)
	components, err := json.Marshal(healthList(r.Components))
	if err != nil {
		return nil, fmt.Errorf("%s: encode components: %w", what, err)
	}
	deployments, err := json.Marshal(healthList(r.EffectiveDeployments))
	if err != nil {
		return nil, fmt.Errorf("%s: encode effective deployments: %w", what, err)
	}
	system, err := json.Marshal(r.System)
	if err != nil {
		return nil, fmt.Errorf("%s: encode system stats: %w", what, err)
	}
	return []any{
		r.Core, r.Status, r.NucleusState, r.NucleusVersion, string(components), string(deployments),
		r.Platform, r.Architecture, r.AgentVersion, r.UptimeSeconds, r.IntervalSeconds, string(system),
		millis(r.CertificateNotAfter), millis(r.ReportedAt), millis(r.ReceivedAt), millis(r.ReceivedAt),
	}, nil
}

// Group commit of signs of life (health.TouchStore): the cores heard from
// together are marked ONLINE and seen by one multi-row UPSERT, framed as
// putReports' is.

var _ health.TouchStore = (*HealthStore)(nil)

const (
	touchHead = `INSERT INTO core_health (core, connection_state, last_seen_at)
SELECT cores.name, 'ONLINE', v.column2
FROM (VALUES `
	touchRow  = `(?, CAST(? AS BIGINT))`
	touchTail = `) AS v JOIN cores ON cores.name = v.column1
WHERE true
ORDER BY cores.name
ON CONFLICT (core) DO UPDATE SET connection_state = excluded.connection_state,
	last_seen_at = CASE WHEN excluded.last_seen_at > core_health.last_seen_at THEN excluded.last_seen_at ELSE core_health.last_seen_at END
RETURNING core`
)

// TouchCores marks each core of seen ONLINE and moves its last-seen time
// forward to the time given, in one transaction (health.TouchStore), and
// returns the names that are not cores.
func (s *HealthStore) TouchCores(ctx context.Context, seen map[string]time.Time) (map[string]bool, error) {
	names := make([]string, 0, len(seen))
	for name := range seen {
		names = append(names, name)
	}
	sort.Strings(names) // lock order, as putReports
	found := make(map[string]bool, len(names))
	touch := func(q Querier) error {
		for _, c := range chunks(len(names)) {
			if err := s.touchChunk(ctx, q, names[c[0]:c[1]], seen, found); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if len(names) <= batchRows {
		err = touch(s.d.w(ctx)) // one statement is one transaction
	} else {
		err = s.d.InTx(ctx, func(tx *sql.Tx) error { return touch(tx) })
	}
	if err != nil {
		return nil, err
	}
	missing := make(map[string]bool)
	for _, name := range names {
		if !found[name] {
			missing[name] = true
		}
	}
	return missing, nil
}

// touchChunk runs TouchCores' statement for names (at most batchRows),
// marking in found the cores it wrote.
func (s *HealthStore) touchChunk(ctx context.Context, q Querier, names []string, seen map[string]time.Time, found map[string]bool) error {
	vals := make([][]any, len(names))
	for k, name := range names {
		vals[k] = []any{name, millis(seen[name])}
	}
	list, args := valuesList(touchRow, vals) // padding rows have a NULL core: they join no core
	what := fmt.Sprintf("record that %d cores were seen", len(names))
	return s.d.markNames(ctx, q, what, touchHead+list+touchTail, args, found)
}
