package deploy_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/mqttmsg"
)

// perCoreProvider hides the local provider's BatchRegistry, as the AWS
// provider has none: the batch then asks the provider per core.
type perCoreProvider struct {
	provider.Provider
	deploy.GroupLister
}

// itemOnly is the deployment service without its BatchProcessor, so the
// runner works every item alone (ProcessItem), as before batches.
type itemOnly struct{ s *deploy.Service }

func (p itemOnly) ProcessItem(ctx context.Context, t tasks.Task, it *tasks.Item, save func(context.Context) error) error {
	return p.s.ProcessItem(ctx, t, it, save)
}
func (p itemOnly) AfterBatch(ctx context.Context, t tasks.Task, items []*tasks.Item) error {
	return p.s.AfterBatch(ctx, t, items)
}
func (p itemOnly) Expand(ctx context.Context, t tasks.Task) ([]tasks.Item, int, error) {
	return p.s.Expand(ctx, t)
}

var (
	_ deploy.BatchRegistry = (*local.Provider)(nil)
	_ tasks.BatchProcessor = (*deploy.Service)(nil)
)

// A batch of cores in every starting situation ends each item as working
// it alone (ProcessItem) did, whether the provider answers for the batch
// (local) or per core (aws), and a re-run of the batch changes nothing.
func TestBatchOutcomes(t *testing.T) {
	const (
		group1 = "cdf_ggv2_deploymentForTemplate_T_1"
		group2 = "cdf_ggv2_deploymentForTemplate_T_2"
	)
	cases := []struct {
		name     string
		perCore  bool // provider without BatchRegistry
		itemOnly bool // runner without the BatchProcessor
	}{
		{name: "batch, local registry"},
		{name: "batch, per-core provider", perCore: true},
		{name: "one item at a time", itemOnly: true},
	}
	type result struct {
		items     map[string]string
		groups    map[string][]string
		records   map[string]string
		published []string
		created   int
	}
	var results []result
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			if tc.perCore {
				e.svc = deploy.New(deploy.Config{Tasks: e.db, Store: e.db, Cores: e.db.Cores(), Templates: e.tmpl,
					Provider: perCoreProvider{Provider: e.prov, GroupLister: e.prov}, Publisher: e.pub, DeploymentTimeout: e.timeout, Now: e.clock,
					Events: func(ctx context.Context, detailType string, detail any) {
						e.mu.Lock()
						defer e.mu.Unlock()
						e.events = append(e.events, event{detailType, detail})
					}})
				e.runner = &tasks.Runner{Store: e.db, Processors: map[tasks.Kind]tasks.Processor{tasks.KindDeployment: e.svc}, Now: e.clock}
			}
			if tc.itemOnly {
				e.runner = &tasks.Runner{Store: e.db, Processors: map[tasks.Kind]tasks.Processor{tasks.KindDeployment: itemOnly{e.svc}}, Now: e.clock}
			}
			e.core("fresh", true)
			e.core("moving", true)
			e.core("unregistered", false)
			// Registered (it connected) but its thing was deleted.
			if err := e.prov.MarkCoreRegistered(ctx, "thingless"); err != nil {
				t.Fatal(err)
			}
			e.template("T", "1.0.0")
			e.template("T", "2.0.0")
			if err := e.prov.CreateThingGroup(ctx, "site", ""); err != nil {
				t.Fatal(err)
			}
			if err := e.prov.AddThingToGroup(ctx, "moving", "site"); err != nil {
				t.Fatal(err)
			}
			first := e.submit(deployTo("T", 1, "moving"))
			e.drain()

			id := e.submit(deployTo("T", 2, "fresh", "moving", "unregistered", "thingless"))
			e.drain()
			got := e.task(id)
			want := map[string]string{
				"fresh":        "InProgress|",
				"moving":       "InProgress|",
				"unregistered": "Failure|" + deploy.MsgNotRegistered,
				"thingless":    `Failure|Failed to add core device to deployment thing group target: thing "thingless" does not exist`,
			}
			if s := statuses(got); !equalMaps(s, want) {
				t.Fatalf("items = %v, want %v", s, want)
			}
			if s := statuses(e.task(first)); !contains(s["moving"], "Superseded by deployment task "+id) {
				t.Fatalf("first task's item = %v; want superseded", s)
			}
			r := result{items: statuses(got), groups: map[string][]string{}, records: map[string]string{}}
			for _, c := range []string{"fresh", "moving", "unregistered"} {
				r.groups[c] = e.groups(c)
			}
			if !slices.Equal(r.groups["moving"], []string{group2, "site"}) || !slices.Equal(r.groups["fresh"], []string{group2}) {
				t.Fatalf("groups = %v", r.groups)
			}
			for _, c := range []string{"fresh", "moving", "unregistered", "thingless"} {
				rec := e.coreRecord(c)
				r.records[c] = fmt.Sprintf("%s v%d %s %q", rec.DesiredName, rec.DesiredVersion, rec.DeploymentStatus, rec.DeploymentStatusMessage)
			}
			for _, c := range []string{"fresh", "moving"} {
				if doc := e.pub.last(t, c); doc.TaskID != id || doc.TemplateVersion != 2 {
					t.Fatalf("document of %s = %+v", c, doc)
				}
			}
			r.published = []string{fmt.Sprint(e.pub.count())}
			r.created = len(e.eventsOf(deploy.EventDeploymentTaskCreated))

			// The batch run again (a retried job) changes no item or deadline.
			before, _ := e.db.WaitsForCores(ctx, []string{"fresh", "moving"})
			e.advance(time.Minute)
			if err := e.runner.RunBatch(ctx, tasks.BatchRef{TaskID: id, Batch: 0}); err != nil {
				t.Fatal(err)
			}
			if s := statuses(e.task(id)); !equalMaps(s, want) {
				t.Fatalf("items after a re-run = %v, want %v", s, want)
			}
			after, _ := e.db.WaitsForCores(ctx, []string{"fresh", "moving"})
			if fmt.Sprint(before) != fmt.Sprint(after) {
				t.Fatalf("waits changed by a re-run: %v → %v", before, after)
			}

			// Both reports finish the task (Failure: two cores could not start).
			for _, c := range []string{"fresh", "moving"} {
				doc := e.pub.last(t, c)
				e.report(c, mqttmsg.DeploymentStatusMsg{DeploymentID: doc.DeploymentID, TaskID: id, Status: mqttmsg.StatusSucceeded})
			}
			got = e.task(id)
			if got.TaskStatus != cdf.StatusFailure || *got.BatchesComplete != 1 || statuses(got)["fresh"] != "Success|" {
				t.Fatalf("after the reports: %+v", got)
			}
			results = append(results, r)
		})
	}
	for i := 1; i < len(results); i++ {
		if fmt.Sprint(results[i]) != fmt.Sprint(results[0]) {
			t.Errorf("%s differs from %s:\n%+v\n%+v", cases[i].name, cases[0].name, results[i], results[0])
		}
	}
}

// A batch completes on the report of its last item only, once, and the
// next batches' items are untouched by it.
func TestBatchCompletesOnLastReport(t *testing.T) {
	e := newEnv(t)
	e.template("T", "1.0.0")
	var cores []string
	for i := 0; i < deploy.BatchSize+3; i++ {
		c := fmt.Sprintf("c%03d", i)
		e.core(c, true)
		cores = append(cores, c)
	}
	id := e.submit(deployTo("T", 1, cores...))
	e.drain()
	got := e.task(id)
	if *got.BatchesTotal != 2 || *got.BatchesComplete != 0 || e.pub.count() != len(cores) {
		t.Fatalf("after the batches: total %d, complete %d, published %d", *got.BatchesTotal, *got.BatchesComplete, e.pub.count())
	}
	for i, c := range cores {
		doc := e.pub.last(t, c)
		e.report(c, mqttmsg.DeploymentStatusMsg{DeploymentID: doc.DeploymentID, TaskID: id, Status: mqttmsg.StatusSucceeded})
		got := e.task(id)
		want := 0
		if i >= deploy.BatchSize-1 {
			want = 1
		}
		if i == len(cores)-1 {
			want = 2
		}
		if *got.BatchesComplete != want {
			t.Fatalf("after %d reports: %d batches complete, want %d", i+1, *got.BatchesComplete, want)
		}
	}
	if got := e.task(id); got.TaskStatus != cdf.StatusSuccess {
		t.Fatalf("task = %+v", got)
	}
}
