package sqlstore

import (
	"cmp"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/fleet"
	"github.com/ggfleet/ggfleet/shared/cdf"
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
