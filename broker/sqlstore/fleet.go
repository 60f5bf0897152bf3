package sqlstore

import (
	"context"

	"github.com/ggfleet/ggfleet/broker/fleet"
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
