package deploy_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.10.0", "1.9.2", 1},
		{"2.0.0", "10.0.0", -1},
		{"1.0.0-rc.1", "1.0.0", -1},
		{"1.0.0", "1.0.0-rc.1", 1},
		{"1.0.0-rc.2", "1.0.0-rc.10", -1},
		{"1.0", "1.0.0", 0},
		{"1.0.1", "1.0", 1},
		{"1.0.0+build.5", "1.0.0", 0},
		{"abc", "abd", -1},
	}
	for _, tt := range tests {
		if got := deploy.CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestComponentChanges(t *testing.T) {
	merge := func(s string) *cdf.ConfigurationUpdate { return &cdf.ConfigurationUpdate{Merge: s} }
	tests := []struct {
		name     string
		from, to []cdf.Component
		want     []cdf.ComponentChange
	}{
		{"nothing to something", nil, []cdf.Component{{Key: "b", Version: "1.0.0"}, {Key: "a", Version: "2.0.0"}},
			[]cdf.ComponentChange{{Component: "a", Change: "added", To: "2.0.0"}, {Component: "b", Change: "added", To: "1.0.0"}}},
		{"same", []cdf.Component{{Key: "a", Version: "1.0.0", ConfigurationUpdate: merge(`{"x":1,"y":2}`)}},
			[]cdf.Component{{Key: "a", Version: "1.0.0", ConfigurationUpdate: merge(`{ "y":2, "x":1 }`)}}, []cdf.ComponentChange{}},
		{"every kind", []cdf.Component{
			{Key: "up", Version: "1.9.0"}, {Key: "down", Version: "2.0.0"}, {Key: "gone", Version: "1.0.0"},
			{Key: "cfg", Version: "1.0.0", ConfigurationUpdate: merge(`{"x":1}`)}, {Key: "user", Version: "1.0.0"},
		}, []cdf.Component{
			{Key: "up", Version: "1.10.0"}, {Key: "down", Version: "1.5.0"}, {Key: "new", Version: "0.1.0"},
			{Key: "cfg", Version: "1.0.0", ConfigurationUpdate: merge(`{"x":2}`)}, {Key: "user", Version: "1.0.0", RunWith: &cdf.RunWith{PosixUser: "root"}},
		}, []cdf.ComponentChange{
			{Component: "cfg", Change: "configChanged", From: "1.0.0", To: "1.0.0"},
			{Component: "down", Change: "downgraded", From: "2.0.0", To: "1.5.0"},
			{Component: "gone", Change: "removed", From: "1.0.0"},
			{Component: "new", Change: "added", To: "0.1.0"},
			{Component: "up", Change: "upgraded", From: "1.9.0", To: "1.10.0"},
			{Component: "user", Change: "configChanged", From: "1.0.0", To: "1.0.0"},
		}},
		{"empty run-as equals none", []cdf.Component{{Key: "a", Version: "1", RunWith: &cdf.RunWith{}}}, []cdf.Component{{Key: "a", Version: "1"}}, []cdf.ComponentChange{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := deploy.ComponentChanges(tt.from, tt.to); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// coreViews is a CoreView over fixed core documents.
type coreViews map[string]cdf.Core

func (v coreViews) get(ctx context.Context, name string) (cdf.Core, error) {
	c, ok := v[name]
	if !ok {
		return cdf.Core{}, errkind.New(errkind.NotFound, "core %q not found", name)
	}
	return c, nil
}

// snapshot is everything a plan must not change.
func snapshot(t *testing.T, e *env, cores ...string) string {
	t.Helper()
	ctx := context.Background()
	list, _, err := e.svc.ListTasks(ctx, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	j, _ := json.Marshal(list)
	b.Write(j)
	for _, c := range cores {
		r, err := e.db.Cores().GetCore(ctx, c)
		if errkind.Is(err, errkind.NotFound) {
			b.WriteString("|" + c + ":none")
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		j, _ := json.Marshal(r)
		b.WriteString("|" + string(j))
		g, _ := e.prov.ListThingGroupsForThing(ctx, c)
		b.WriteString(strings.Join(g, ","))
	}
	e.mu.Lock()
	b.WriteString("|queued:" + string(rune('0'+len(e.queued))))
	e.mu.Unlock()
	return b.String()
}

func TestPlan(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.core("online", true)
	e.core("offline", true)
	e.core("fresh", false)
	if err := e.prov.CreateThingGroup(ctx, "line1", ""); err != nil {
		t.Fatal(err)
	}
	if err := e.prov.AddThingToGroup(ctx, "offline", "line1"); err != nil {
		t.Fatal(err)
	}
	e.template("T", "2.0.0") // version 1
	e.template("T", "2.1.0") // version 2
	views := coreViews{
		"online": {Name: "online", Template: cdf.CoreTemplate{Reported: cdf.ReportedTemplate{Name: "T", Version: 1}},
			Device: &cdf.Device{Connectivity: "ONLINE"}},
		"offline": {Name: "offline", Template: cdf.CoreTemplate{Reported: cdf.ReportedTemplate{Name: "T", Version: 2}},
			Device: &cdf.Device{Connectivity: "OFFLINE"}},
		"fresh": {Name: "fresh", Device: &cdf.Device{Connectivity: "OFFLINE",
			InstalledComponents: []cdf.InstalledComponent{{Name: "aws.greengrass.Cli", Version: "2.2.0"}}}},
	}
	svc := deploy.New(deploy.Config{Tasks: e.db, Store: e.db, Cores: e.db.Cores(), Templates: e.tmpl, Provider: e.prov,
		Publisher: e.pub, Now: e.clock, CoreView: views.get})

	before := snapshot(t, e, "online", "offline", "fresh", "unknown")
	plan, err := svc.Plan(ctx, cdf.NewDeploymentTask{Template: cdf.NewDeploymentTemplate{Name: "T"},
		Targets: cdf.DeploymentTargets{ThingNames: []string{"online", "fresh", "unknown"}, ThingGroupNames: []string{"line1", "nogroup"}}})
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, e, "online", "offline", "fresh", "unknown"); after != before {
		t.Fatalf("the plan changed the database:\nbefore %s\nafter  %s", before, after)
	}
	if e.pub.count() != 0 {
		t.Fatalf("the plan published %d messages", e.pub.count())
	}
	if !plan.DryRun || plan.Template != (cdf.TemplateRef{Name: "T", Version: 2}) {
		t.Fatalf("plan header: %+v", plan)
	}
	if len(plan.Notes) != 1 || !strings.Contains(plan.Notes[0], "nogroup does not exist") {
		t.Errorf("notes: %v", plan.Notes)
	}
	byCore := map[string]cdf.CoreDeploymentPlan{}
	var order []string
	for _, c := range plan.Cores {
		byCore[c.CoreName] = c
		order = append(order, c.CoreName)
	}
	if !reflect.DeepEqual(order, []string{"online", "fresh", "unknown", "offline"}) {
		t.Fatalf("cores in order %v", order)
	}
	on := byCore["online"]
	if on.From == nil || *on.From != (cdf.TemplateRef{Name: "T", Version: 1}) || on.WouldFail != "" ||
		!reflect.DeepEqual(on.Changes, []cdf.ComponentChange{{Component: "aws.greengrass.Cli", Change: "upgraded", From: "2.0.0", To: "2.1.0"}}) {
		t.Errorf("online: %+v", on)
	}
	off := byCore["offline"]
	if off.From == nil || off.From.Version != 2 || len(off.Changes) != 0 || !strings.Contains(off.WouldFail, "offline") {
		t.Errorf("offline: %+v", off)
	}
	fr := byCore["fresh"]
	if fr.From != nil || !strings.HasPrefix(fr.WouldFail, deploy.MsgNotRegistered) || len(fr.Changes) != 2 ||
		fr.Changes[0] != (cdf.ComponentChange{Component: "aws.greengrass.Cli", Change: "downgraded", From: "2.2.0", To: "2.1.0"}) ||
		fr.Changes[1].Change != "added" {
		t.Errorf("fresh: %+v", fr)
	}
	if u := byCore["unknown"]; u.From != nil || len(u.Changes) != 2 || !strings.HasPrefix(u.WouldFail, deploy.MsgNotRegistered) {
		t.Errorf("unknown: %+v", u)
	}

	// The same checks as Submit: a bad request is refused the same way.
	if _, err := svc.Plan(ctx, deployTo("Nope", 0, "online")); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("unknown template: %v", err)
	}
	if _, err := svc.Plan(ctx, deployTo("T", 0)); !errkind.Is(err, errkind.Invalid) {
		t.Errorf("no targets: %v", err)
	}
	empty, err := svc.Plan(ctx, cdf.NewDeploymentTask{Template: cdf.NewDeploymentTemplate{Name: "T"}, Targets: cdf.DeploymentTargets{ThingGroupNames: []string{"nogroup"}}})
	if err != nil || len(empty.Cores) != 0 || len(empty.Notes) != 1 || !strings.Contains(empty.Notes[0], "resolved to no core devices") {
		t.Errorf("empty plan: %+v %v", empty, err)
	}
}
