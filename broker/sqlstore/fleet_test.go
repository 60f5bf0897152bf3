package sqlstore

import (
	"cmp"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/fleet"
	"github.com/ggfleet/ggfleet/broker/health"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

func TestFleetStats(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	now := time.UnixMilli(1700000000123).UTC()
	tpl := cdf.Template{Name: "T", Components: []cdf.Component{{Key: "a", Version: "1"}}, CreatedAt: cdf.At(now)}
	if err := db.CreateTemplate(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AddTemplateVersion(ctx, tpl); err != nil {
		t.Fatal(err)
	}
	if err := db.Cores().EnsureCores(ctx, []string{"a", "b", "c", "d"}, now); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`UPDATE cores SET desired_name='T', desired_version=2, reported_name='T', reported_version=2, deployment_status='SUCCESSFUL' WHERE name IN ('a','b')`,
		`UPDATE cores SET desired_name='T', desired_version=2, deployment_status='Failure' WHERE name = 'c'`,
	} {
		if _, err := db.sql.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	st, err := db.Fleet().FleetStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(st.Desired, func(a, b fleet.DesiredCount) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version), cmp.Compare(a.DeploymentStatus, b.DeploymentStatus))
	})
	slices.SortFunc(st.Reported, func(a, b fleet.ReportedCount) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	slices.SortFunc(st.Templates, func(a, b fleet.TemplateVersion) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	wantDesired := []fleet.DesiredCount{
		{Name: "None", Version: 0, DeploymentStatus: "None", Cores: 1},
		{Name: "T", Version: 2, DeploymentStatus: "Failure", Cores: 1},
		{Name: "T", Version: 2, DeploymentStatus: "SUCCESSFUL", Cores: 2},
	}
	wantReported := []fleet.ReportedCount{{Name: "None", Version: 0, Cores: 2}, {Name: "T", Version: 2, Cores: 2}}
	wantTemplates := []fleet.TemplateVersion{{Name: "T", Version: 1, Latest: 2}, {Name: "T", Version: 2, Latest: 2}}
	if !slices.Equal(st.Desired, wantDesired) || !slices.Equal(st.Reported, wantReported) || !slices.Equal(st.Templates, wantTemplates) {
		t.Errorf("FleetStats\n got %+v\nwant %+v %+v %+v", st, wantDesired, wantReported, wantTemplates)
	}
}

// TestListCoreStates checks the fleet's core list on both engines: each
// filter alone and together, the lease rule (ONLINE only while heard from
// within 3 × the reported interval), cores without a health row, LIKE's
// wildcards taken literally, paging and the matching count.
func TestListCoreStates(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	now := time.UnixMilli(1700000000000).UTC()
	names := []string{"a-healthy-online", "b-unhealthy-online", "c-healthy-stale", "d-no-report", "e_offline", "f-never-seen", "eXoffline"}
	if err := db.Cores().EnsureCores(ctx, names, now); err != nil {
		t.Fatal(err)
	}
	if _, err := db.sql.ExecContext(ctx, db.q(`UPDATE cores SET desired_name = 'T', desired_version = 2 WHERE name IN ('a-healthy-online', 'c-healthy-stale')`)); err != nil {
		t.Fatal(err)
	}
	report := func(core, status string, interval int, at time.Time) {
		t.Helper()
		r := health.Report{Core: core, Status: status, NucleusVersion: "2.12.0", AgentVersion: "1.0.0", IntervalSeconds: interval, ReportedAt: at, ReceivedAt: at}
		if _, _, err := db.Health().PutReport(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	report("a-healthy-online", "HEALTHY", 10, now.Add(-29*time.Second))    // within 3 × 10 s
	report("b-unhealthy-online", "UNHEALTHY", 0, now.Add(-89*time.Second)) // within 3 × the 30 s default
	report("c-healthy-stale", "HEALTHY", 10, now.Add(-31*time.Second))     // lease run out
	report("e_offline", "HEALTHY", 10, now.Add(-time.Second))
	if err := db.Health().SetConnection(ctx, "e_offline", mqttmsg.Offline, now); err != nil {
		t.Fatal(err)
	}
	if err := db.Health().SetConnection(ctx, "d-no-report", mqttmsg.Online, now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	lease := fleet.Lease{Now: now, Factor: 3, DefaultInterval: 30 * time.Second}

	list := func(q fleet.CoreQuery) ([]string, int) {
		t.Helper()
		if q.Count == 0 {
			q.Count = 100
		}
		got, more, matching, err := db.Fleet().ListCoreStates(ctx, q, lease)
		if err != nil {
			t.Fatal(err)
		}
		if more {
			t.Fatalf("%+v: more pages, want one", q)
		}
		var out []string
		for _, c := range got {
			out = append(out, c.Name)
		}
		return out, matching
	}
	tests := []struct {
		name string
		q    fleet.CoreQuery
		want []string
	}{
		{"all", fleet.CoreQuery{}, names},
		{"online", fleet.CoreQuery{Connectivity: "ONLINE"}, []string{"a-healthy-online", "b-unhealthy-online", "d-no-report"}},
		{"offline", fleet.CoreQuery{Connectivity: "OFFLINE"}, []string{"c-healthy-stale", "e_offline", "eXoffline", "f-never-seen"}},
		{"healthy", fleet.CoreQuery{Status: "HEALTHY"}, []string{"a-healthy-online", "c-healthy-stale", "e_offline"}},
		{"unhealthy", fleet.CoreQuery{Status: "UNHEALTHY"}, []string{"b-unhealthy-online"}},
		{"unknown", fleet.CoreQuery{Status: "UNKNOWN"}, []string{"d-no-report", "eXoffline", "f-never-seen"}},
		{"healthy and online", fleet.CoreQuery{Status: "HEALTHY", Connectivity: "ONLINE"}, []string{"a-healthy-online"}},
		{"name, any case", fleet.CoreQuery{NameContains: "HEALTHY"}, []string{"a-healthy-online", "b-unhealthy-online", "c-healthy-stale"}},
		{"underscore is literal", fleet.CoreQuery{NameContains: "e_"}, []string{"e_offline"}},
		{"percent is literal", fleet.CoreQuery{NameContains: "%"}, nil},
		{"template", fleet.CoreQuery{TemplateName: "T"}, []string{"a-healthy-online", "c-healthy-stale"}},
		{"template version", fleet.CoreQuery{TemplateName: "T", TemplateVersion: 2, Connectivity: "ONLINE"}, []string{"a-healthy-online"}},
		{"other template version", fleet.CoreQuery{TemplateName: "T", TemplateVersion: 1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := slices.Sorted(slices.Values(tt.want))
			got, matching := list(tt.q)
			if !slices.Equal(got, want) || matching != len(want) {
				t.Errorf("got %v (matching %d), want %v", got, matching, want)
			}
		})
	}

	t.Run("rows", func(t *testing.T) {
		got, _, _, err := db.Fleet().ListCoreStates(ctx, fleet.CoreQuery{NameContains: "a-", Count: 10}, lease)
		if err != nil {
			t.Fatal(err)
		}
		want := fleet.CoreState{Name: "a-healthy-online", DesiredName: "T", DesiredVersion: 2, ReportedName: "None",
			DeploymentStatus: "None", Status: "HEALTHY", Online: true, LastSeenAt: now.Add(-29 * time.Second),
			ReportedAt: now.Add(-29 * time.Second), CoreVersion: "2.12.0", AgentVersion: "1.0.0"}
		if len(got) != 1 || got[0] != want {
			t.Errorf("got %+v\nwant [%+v]", got, want)
		}
	})

	t.Run("pages", func(t *testing.T) {
		var seen []string
		after := ""
		for page := 0; ; page++ {
			got, more, matching, err := db.Fleet().ListCoreStates(ctx, fleet.CoreQuery{Connectivity: "OFFLINE", After: after, Count: 3}, lease)
			if err != nil {
				t.Fatal(err)
			}
			if matching != 4 {
				t.Errorf("page %d: matching %d, want 4 (all pages)", page, matching)
			}
			for _, c := range got {
				seen = append(seen, c.Name)
			}
			if !more {
				break
			}
			after = got[len(got)-1].Name
		}
		if want := []string{"c-healthy-stale", "eXoffline", "e_offline", "f-never-seen"}; !slices.Equal(seen, want) {
			t.Errorf("pages gave %v, want %v", seen, want)
		}
	})
}
