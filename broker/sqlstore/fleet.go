package sqlstore

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/fleet"
	"github.com/ggfleet/ggfleet/broker/health"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// FleetStore reads the aggregates of the fleet summary (fleet.Store): three
// read-only queries over cores and template versions, whatever the fleet
// size, through the read pool. The two over cores are answered from covering
// indexes (migration 0018), in index order without a sort. Each query sees
// its own snapshot, as before: a core changing between them can be counted
// under its old desired and new reported template for that one answer.
type FleetStore struct{ d *DB }

var _ fleet.Store = (*FleetStore)(nil)

// Fleet returns the fleet store backed by this database.
func (d *DB) Fleet() *FleetStore { return &FleetStore{d: d} }

// FleetStats counts cores by desired template version and deployment
// status, by reported template version, and lists every template version.
func (s *FleetStore) FleetStats(ctx context.Context) (fleet.Stats, error) {
	var st fleet.Stats
	err := s.query(ctx, "count cores by desired template",
		`SELECT desired_name, desired_version, deployment_status, COUNT(*) FROM cores
		GROUP BY desired_name, desired_version, deployment_status`,
		func(scan func(...any) error) error {
			var c fleet.DesiredCount
			if err := scan(&c.Name, &c.Version, &c.DeploymentStatus, &c.Cores); err != nil {
				return err
			}
			st.Desired = append(st.Desired, c)
			return nil
		})
	if err != nil {
		return fleet.Stats{}, err
	}
	err = s.query(ctx, "count cores by reported template",
		`SELECT reported_name, reported_version, COUNT(*) FROM cores GROUP BY reported_name, reported_version`,
		func(scan func(...any) error) error {
			var c fleet.ReportedCount
			if err := scan(&c.Name, &c.Version, &c.Cores); err != nil {
				return err
			}
			st.Reported = append(st.Reported, c)
			return nil
		})
	if err != nil {
		return fleet.Stats{}, err
	}
	err = s.query(ctx, "list template versions",
		`SELECT v.name, v.version, t.latest FROM template_versions v JOIN templates t ON t.name = v.name`,
		func(scan func(...any) error) error {
			var tv fleet.TemplateVersion
			if err := scan(&tv.Name, &tv.Version, &tv.Latest); err != nil {
				return err
			}
			st.Templates = append(st.Templates, tv)
			return nil
		})
	if err != nil {
		return fleet.Stats{}, err
	}
	return st, nil
}

func (s *FleetStore) query(ctx context.Context, what, query string, row func(scan func(...any) error) error) error {
	rows, err := s.d.r(ctx).QueryContext(ctx, s.d.q(query))
	if err != nil {
		return mapErr(err, what)
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return mapErr(err, what)
		}
	}
	return mapErr(rows.Err(), what)
}

// fleetStatusSQL is a core's status, UNKNOWN (its one parameter) before its
// first health report; the filter and the rows both use it.
const fleetStatusSQL = `COALESCE(NULLIF(h.status, ''), ?)`

// fleetOnlineSQL is health's lease rule over a core_health row: the
// connection is up and last-seen is within Factor × the reported interval
// (the default when none) of now. Its three parameters are the factor, the
// default interval (s) and now (ms).
const fleetOnlineSQL = `(h.connection_state = 'ONLINE' AND h.last_seen_at > 0 AND
	h.last_seen_at + CAST(? AS BIGINT) * 1000 * (CASE WHEN h.interval_seconds > 0 THEN h.interval_seconds ELSE CAST(? AS BIGINT) END) >= CAST(? AS BIGINT))`

// ListCoreStates lists cores with their health row, filtered, in name order
// (fleet.Store), and counts every core the filters select, through the read
// pool. The two queries may see different snapshots; the count is a figure
// for the operator, not a cursor.
func (s *FleetStore) ListCoreStates(ctx context.Context, q fleet.CoreQuery, lease fleet.Lease) ([]fleet.CoreState, bool, int, error) {
	leaseArgs := []any{lease.Factor, int64(lease.DefaultInterval / time.Second), millis(lease.Now)}
	var where []string
	var args []any
	if q.NameContains != "" {
		where = append(where, `LOWER(c.name) LIKE ? ESCAPE '\'`)
		args = append(args, "%"+likeEscaper.Replace(strings.ToLower(q.NameContains))+"%")
	}
	if q.TemplateName != "" {
		where = append(where, `c.desired_name = ?`)
		args = append(args, q.TemplateName)
		if q.TemplateVersion > 0 {
			where = append(where, `c.desired_version = ?`)
			args = append(args, q.TemplateVersion)
		}
	}
	if q.Status != "" {
		where = append(where, fleetStatusSQL+` = ?`)
		args = append(args, health.StatusUnknown, q.Status)
	}
	switch q.Connectivity {
	case mqttmsg.Online:
		where = append(where, `COALESCE(`+fleetOnlineSQL+`, FALSE)`)
		args = append(args, leaseArgs...)
	case mqttmsg.Offline:
		where = append(where, `NOT COALESCE(`+fleetOnlineSQL+`, FALSE)`)
		args = append(args, leaseArgs...)
	}
	const from = ` FROM cores c LEFT JOIN core_health h ON h.core = c.name`
	filter := func(extra ...string) string {
		all := append(slices.Clip(where), extra...)
		if len(all) == 0 {
			return ""
		}
		return ` WHERE ` + strings.Join(all, ` AND `)
	}

	var matching int
	if err := s.d.r(ctx).QueryRowContext(ctx, s.d.q(`SELECT COUNT(*)`+from+filter()), args...).Scan(&matching); err != nil {
		return nil, false, 0, mapErr(err, "count the fleet's cores")
	}
	listArgs := append(append([]any{health.StatusUnknown}, leaseArgs...), args...)
	var cursor []string
	if q.After != "" {
		cursor = append(cursor, `c.name > ?`)
		listArgs = append(listArgs, q.After)
	}
	listArgs = append(listArgs, q.Count+1)
	rows, err := s.d.r(ctx).QueryContext(ctx, s.d.q(`SELECT c.name, c.desired_name, c.desired_version,
		c.reported_name, c.reported_version, c.deployment_status, `+fleetStatusSQL+`,
		CASE WHEN `+fleetOnlineSQL+` THEN 1 ELSE 0 END, COALESCE(h.last_seen_at, 0), COALESCE(h.reported_at, 0),
		COALESCE(h.nucleus_version, ''), COALESCE(h.agent_version, '')`+from+filter(cursor...)+
		` ORDER BY c.name LIMIT ?`), listArgs...)
	if err != nil {
		return nil, false, 0, mapErr(err, "list the fleet's cores")
	}
	defer rows.Close()
	out := []fleet.CoreState{}
	for rows.Next() {
		var c fleet.CoreState
		var online int
		var seen, reported int64
		if err := rows.Scan(&c.Name, &c.DesiredName, &c.DesiredVersion, &c.ReportedName, &c.ReportedVersion,
			&c.DeploymentStatus, &c.Status, &online, &seen, &reported, &c.CoreVersion, &c.AgentVersion); err != nil {
			return nil, false, 0, mapErr(err, "list the fleet's cores")
		}
		c.Online, c.LastSeenAt, c.ReportedAt = online == 1, fromMillis(seen), fromMillis(reported)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, false, 0, mapErr(err, "list the fleet's cores")
	}
	more := len(out) > q.Count
	if more {
		out = out[:q.Count]
	}
	return out, more, matching, nil
}

// likeEscaper escapes LIKE's wildcards and its escape character ('\').
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
