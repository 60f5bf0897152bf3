package fleet_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/fleet"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// core is a core record's template state.
type core struct {
	name      string
	desired   string
	desiredV  int
	reported  string
	reportedV int
	status    string
}

// world is the database state of a scenario.
type world struct {
	templates map[string]int // name → number of versions
	deleted   []string       // templates deleted after the cores were set
	cores     []core
}

// apply creates the missing template versions and sets the cores.
func apply(t *testing.T, db *sqlstore.DB, w world) {
	t.Helper()
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for name, n := range w.templates {
		tpl := cdf.Template{Name: name, Components: []cdf.Component{{Key: "com.example.App", Version: "1.0.0"}}, CreatedAt: cdf.At(now)}
		have := 0
		if got, err := db.GetTemplate(ctx, name, 0); err == nil {
			have = got.Version
		} else if err := db.CreateTemplate(ctx, tpl); err != nil {
			t.Fatal(err)
		} else {
			have = 1
		}
		for ; have < n; have++ {
			if _, err := db.AddTemplateVersion(ctx, tpl); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range w.cores {
		if err := db.Cores().EnsureCores(ctx, []string{c.name}, now); err != nil {
			t.Fatal(err)
		}
		_, err := db.SQL().ExecContext(ctx, `UPDATE cores SET desired_name = ?, desired_version = ?, reported_name = ?, reported_version = ?, deployment_status = ? WHERE name = ?`,
			c.desired, c.desiredV, c.reported, c.reportedV, c.status, c.name)
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range w.deleted {
		if err := db.DeleteTemplate(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
}

func zero() cdf.FleetVersion { return cdf.FleetVersion{} }

func none(v cdf.FleetVersion) cdf.FleetTemplate {
	return cdf.FleetTemplate{Versions: map[string]cdf.FleetVersion{"0": v}}
}

func TestSummary(t *testing.T) {
	tests := []struct {
		name string
		w    world
		want map[string]cdf.FleetTemplate
	}{
		{
			name: "empty fleet",
			want: map[string]cdf.FleetTemplate{"None": none(zero())},
		},
		{
			name: "unused template versions appear with zeros",
			w:    world{templates: map[string]int{"T": 2}},
			want: map[string]cdf.FleetTemplate{
				"None": none(zero()),
				"T":    {LatestVersion: 2, Versions: map[string]cdf.FleetVersion{"1": zero(), "2": zero()}},
			},
		},
		{
			name: "new cores count under None",
			w: world{cores: []core{
				{"a", "None", 0, "None", 0, "None"},
				{"b", "None", 0, "None", 0, "None"},
			}},
			want: map[string]cdf.FleetTemplate{"None": none(cdf.FleetVersion{DesiredInUse: 2, ReportedInUse: 2})},
		},
		{
			name: "CDF figures after v1",
			w: world{templates: map[string]int{"IntegrationTest": 1}, cores: []core{
				{"core1", "IntegrationTest", 1, "IntegrationTest", 1, cdf.DeploymentStatusSuccessful},
				{"core2", "IntegrationTest", 1, "None", 0, cdf.DeploymentStatusFailure},
			}},
			want: map[string]cdf.FleetTemplate{
				"None": none(cdf.FleetVersion{ReportedInUse: 1}),
				"IntegrationTest": {LatestVersion: 1, Versions: map[string]cdf.FleetVersion{
					"1": {DesiredInUse: 2, ReportedInUse: 1, LastDeploymentSuccess: 1, LastDeploymentFailed: 1},
				}},
			},
		},
		{
			name: "every outcome",
			w: world{templates: map[string]int{"T": 1}, cores: []core{
				{"a", "T", 1, "T", 1, cdf.DeploymentStatusSuccessful},
				{"b", "T", 1, "None", 0, cdf.DeploymentStatusInProgress},
				{"c", "T", 1, "None", 0, cdf.DeploymentStatusFailedRollbackComplete},
				{"d", "T", 1, "None", 0, cdf.DeploymentStatusRejected},
				{"e", "T", 1, "None", 0, cdf.DeploymentStatusNone},
			}},
			want: map[string]cdf.FleetTemplate{
				"None": none(cdf.FleetVersion{ReportedInUse: 4}),
				"T": {LatestVersion: 1, Versions: map[string]cdf.FleetVersion{
					"1": {DesiredInUse: 5, ReportedInUse: 1, LastDeploymentSuccess: 1, LastDeploymentFailed: 2, LastDeploymentInProgress: 1},
				}},
			},
		},
		{
			name: "versions only reported, and deleted templates",
			w: world{templates: map[string]int{"T": 1, "Gone": 3}, deleted: []string{"Gone"}, cores: []core{
				{"a", "T", 1, "T", 7, cdf.DeploymentStatusFailedNoStateChange},
				{"b", "Gone", 2, "Gone", 3, cdf.DeploymentStatusFailure},
				{"c", "None", 0, "Old", 4, cdf.DeploymentStatusNone},
			}},
			want: map[string]cdf.FleetTemplate{
				"None": none(cdf.FleetVersion{DesiredInUse: 1}),
				"T": {LatestVersion: 1, Versions: map[string]cdf.FleetVersion{
					"1": {DesiredInUse: 1, LastDeploymentFailed: 1},
					"7": {ReportedInUse: 1},
				}},
				"Gone": {Versions: map[string]cdf.FleetVersion{
					"2": {DesiredInUse: 1, LastDeploymentFailed: 1},
					"3": {ReportedInUse: 1},
				}},
				"Old": {Versions: map[string]cdf.FleetVersion{"4": {ReportedInUse: 1}}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := sqlstoretest.Open(t)
			apply(t, db, tt.w)
			got, err := fleet.New(fleet.Config{Store: db.Fleet()}).Summary(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Templates, tt.want) {
				t.Errorf("summary\n got %+v\nwant %+v", got.Templates, tt.want)
			}
		})
	}
}

// TestCDFIntegrationFigures replays the CDF integration test (spec §6): v1
// to core1 (succeeds) and core2 (fails to start), then v2 to core1. The
// final body is the spec's example, byte for byte in meaning.
func TestCDFIntegrationFigures(t *testing.T) {
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	svc := fleet.New(fleet.Config{Store: db.Fleet()})
	apply(t, db, world{templates: map[string]int{"IntegrationTest": 1}, cores: []core{
		{"core1", "IntegrationTest", 1, "IntegrationTest", 1, cdf.DeploymentStatusSuccessful},
		{"core2", "IntegrationTest", 1, "None", 0, cdf.DeploymentStatusFailure},
	}})
	s, err := svc.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v1 := s.Templates["IntegrationTest"].Versions["1"]; v1.DesiredInUse != 2 || v1.LastDeploymentSuccess != 1 || v1.LastDeploymentFailed != 1 {
		t.Fatalf("after v1: %+v, want desiredInUse 2, success 1, failed 1", v1)
	}
	apply(t, db, world{templates: map[string]int{"IntegrationTest": 2}, cores: []core{
		{"core1", "IntegrationTest", 2, "IntegrationTest", 2, cdf.DeploymentStatusSuccessful},
	}})
	s, err = svc.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("testdata", "cdf_figures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("after v2:\n got %s\nwant %s", got, want)
	}
}
