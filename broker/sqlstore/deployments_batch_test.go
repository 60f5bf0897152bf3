package sqlstore

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provider/local"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

var _ local.BatchStore = (*RegistryStore)(nil)

func TestUpdateItems(t *testing.T) {
	ctx := context.Background()
	db, _ := newTaskTestDB(t)
	task, items := newTestTask("upd000001", tasks.KindCore, 3, 10)
	if err := db.CreateTask(ctx, task, items); err != nil {
		t.Fatal(err)
	}
	later := time.UnixMilli(1_700_000_100_000).UTC()
	cases := []struct {
		name    string
		items   []tasks.Item
		wantErr errkind.Kind
		want    map[string]string // name → status|message|progress after the call
	}{
		{name: "none", items: nil, want: map[string]string{"core-03": "Waiting||", "core-02": "Waiting||", "core-01": "Waiting||"}},
		{name: "two in one transaction", items: []tasks.Item{
			{TaskID: task.ID, Name: "core-03", Status: cdf.StatusInProgress, Progress: []byte(`{"p":1}`), UpdatedAt: later},
			{TaskID: task.ID, Name: "core-01", Status: cdf.StatusFailure, StatusMessage: "no", UpdatedAt: later},
		}, want: map[string]string{"core-03": `InProgress||{"p":1}`, "core-02": "Waiting||", "core-01": "Failure|no|"}},
		{name: "a missing item saves none", items: []tasks.Item{
			{TaskID: task.ID, Name: "core-02", Status: cdf.StatusSuccess, UpdatedAt: later},
			{TaskID: task.ID, Name: "core-99", Status: cdf.StatusSuccess, UpdatedAt: later},
		}, wantErr: errkind.NotFound, want: map[string]string{"core-03": `InProgress||{"p":1}`, "core-02": "Waiting||", "core-01": "Failure|no|"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := db.UpdateItems(ctx, tc.items)
			if tc.wantErr != errkind.Other {
				if !errkind.Is(err, tc.wantErr) {
					t.Fatalf("UpdateItems = %v, want kind %d", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			list, err := db.ListItems(ctx, task.ID)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, it := range list {
				got[it.Name] = it.Status + "|" + it.StatusMessage + "|" + string(it.Progress)
				if it.Status != cdf.StatusWaiting && !it.UpdatedAt.Equal(later) {
					t.Errorf("%s updated at %v, want %v", it.Name, it.UpdatedAt, later)
				}
			}
			for n, w := range tc.want {
				if got[n] != w {
					t.Errorf("%s = %q, want %q", n, got[n], w)
				}
			}
		})
	}
}

func TestSetDesiredTemplates(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	now := time.UnixMilli(1_700_000_000_000).UTC()
	if err := db.Cores().EnsureCores(ctx, []string{"c1", "c2", "c3"}, now); err != nil {
		t.Fatal(err)
	}
	if err := db.Cores().SetDeploymentStatus(ctx, "c2", cdf.DeploymentStatusFailure, "old failure", now); err != nil {
		t.Fatal(err)
	}
	// c9 has no record: skipped, not an error.
	if err := db.Cores().SetDesiredTemplates(ctx, []string{"c1", "c2", "c9"}, "T", 3, cdf.DeploymentStatusInProgress, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := db.Cores().SetDesiredTemplates(ctx, nil, "T", 3, cdf.DeploymentStatusInProgress, now); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		core, name string
		version    int
		status     string
	}{
		{"c1", "T", 3, cdf.DeploymentStatusInProgress},
		{"c2", "T", 3, cdf.DeploymentStatusInProgress},
		{"c3", "None", 0, "None"},
	} {
		r, err := db.Cores().GetCore(ctx, tc.core)
		if err != nil || r.DesiredName != tc.name || r.DesiredVersion != tc.version || r.DeploymentStatus != tc.status || r.DeploymentStatusMessage != "" {
			t.Errorf("%s = %+v, %v; want desired %s v%d, %s, no message", tc.core, r, err, tc.name, tc.version, tc.status)
		}
	}
	if _, err := db.Cores().GetCore(ctx, "c9"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("c9 was created: %v", err)
	}
}

func TestPutDeployments(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	now := time.UnixMilli(1_700_000_000_000).UTC()
	doc := func(core, task, dep string) deploy.Document {
		return deploy.Document{Core: core, TaskID: task, DeploymentID: dep, TemplateName: "T", TemplateVersion: 1,
			Payload: []byte(`{"d":"` + dep + `"}`), UpdatedAt: now}
	}
	wait := func(core, task, dep string, deadline time.Duration) deploy.Wait {
		return deploy.Wait{TaskID: task, Core: core, Batch: 2, DeploymentID: dep, Deadline: now.Add(deadline)}
	}
	if _, _, err := db.PutDocument(ctx, doc("c2", "taskA0001", "d-A")); err != nil {
		t.Fatal(err)
	}
	if err := db.PutWait(ctx, wait("c2", "taskA0001", "d-A", time.Minute)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		waits    []deploy.Wait
		docs     []deploy.Document
		wantPrev map[string]string // core → previous deployment id
	}{
		{name: "first deployment of c1, c2 replaces d-A",
			waits:    []deploy.Wait{wait("c1", "taskB0001", "d-B", time.Hour), wait("c2", "taskB0001", "d-B", time.Hour)},
			docs:     []deploy.Document{doc("c1", "taskB0001", "d-B"), doc("c2", "taskB0001", "d-B")},
			wantPrev: map[string]string{"c2": "d-A"}},
		{name: "a re-run keeps the first deadline and sees its own documents",
			waits:    []deploy.Wait{wait("c1", "taskB0001", "d-B", 2*time.Hour), wait("c2", "taskB0001", "d-B", 2*time.Hour)},
			docs:     []deploy.Document{doc("c1", "taskB0001", "d-B"), doc("c2", "taskB0001", "d-B")},
			wantPrev: map[string]string{"c1": "d-B", "c2": "d-B"}},
		{name: "nothing", wantPrev: map[string]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prev, err := db.PutDeployments(ctx, tc.waits, tc.docs)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for core, p := range prev {
				if p.Core != core {
					t.Errorf("prev[%s].Core = %s", core, p.Core)
				}
				got[core] = p.DeploymentID
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantPrev) {
				t.Fatalf("prev = %v, want %v", got, tc.wantPrev)
			}
		})
	}
	for _, core := range []string{"c1", "c2"} {
		d, err := db.GetDocument(ctx, core)
		if err != nil || d.DeploymentID != "d-B" || string(d.Payload) != `{"d":"d-B"}` {
			t.Fatalf("document of %s = %+v, %v", core, d, err)
		}
	}
	ws, err := db.WaitsForCores(ctx, []string{"c2", "c1", "c7"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range ws {
		got = append(got, fmt.Sprintf("%s/%s/%d/%v", w.TaskID, w.Core, w.Batch, w.Deadline.Sub(now)))
	}
	want := []string{"taskA0001/c2/2/1m0s", "taskB0001/c1/2/1h0m0s", "taskB0001/c2/2/1h0m0s"}
	if !slices.Equal(got, want) {
		t.Fatalf("WaitsForCores = %v, want %v", got, want)
	}
	if ws, err := db.WaitsForCores(ctx, nil); err != nil || len(ws) != 0 {
		t.Fatalf("WaitsForCores(nil) = %v, %v", ws, err)
	}
}

// The outcomes that finish a batch's last items at the same moment (two
// replicas, or two reports handled at once) must leave at least one of them
// seeing the batch done, or the batch waits for the sweeper.
func TestFinishLastItemsConcurrently(t *testing.T) {
	ctx := context.Background()
	db, _ := newTaskTestDB(t)
	now := time.UnixMilli(1_700_000_000_000).UTC()
	const n = 8
	for round := 0; round < 5; round++ {
		id := fmt.Sprintf("conc%05d", round)
		if err := db.CreateExpandingTask(ctx, tasks.Task{ID: id, Kind: tasks.KindDeployment, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		items := make([]tasks.Item, n)
		for i := range items {
			items[i] = tasks.Item{Name: fmt.Sprintf("c%d", i), Seq: i, Status: cdf.StatusInProgress, CreatedAt: now}
		}
		if _, err := db.AddItems(ctx, id, items, 1, now); err != nil {
			t.Fatal(err)
		}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			done int
		)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fin, err := db.Finish(ctx, deploy.Outcome{TaskID: id, Core: fmt.Sprintf("c%d", i), Status: cdf.StatusSuccess, Now: now})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if fin.BatchDone {
					done++
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if done < 1 {
			t.Fatalf("round %d: no outcome saw the batch done", round)
		}
	}
}

func TestRegistryBatch(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	s := db.Registry()
	now := time.UnixMilli(1_700_000_000_000).UTC()
	for _, n := range []string{"a", "b", "c"} {
		if err := s.CreateThing(ctx, provider.Thing{Name: n, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []string{"cdf_ggv2_deploymentForTemplate_T_1", "cdf_ggv2_deploymentForTemplate_T_2", "cdfXggv2_other", "site"} {
		if err := s.CreateThingGroup(ctx, g, "", now); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range [][2]string{{"a", "cdf_ggv2_deploymentForTemplate_T_1"}, {"a", "site"}, {"a", "cdfXggv2_other"}, {"b", "cdf_ggv2_deploymentForTemplate_T_2"}} {
		if err := s.AddThingToGroup(ctx, m[0], m[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkCoreRegistered(ctx, "a", now); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkCoreRegistered(ctx, "zz", now); err != nil {
		t.Fatal(err)
	}
	reg, err := s.RegisteredCores(ctx, []string{"a", "b", "zz", "nope"})
	if err != nil || fmt.Sprint(reg) != "map[a:true zz:true]" {
		t.Fatalf("RegisteredCores = %v, %v", reg, err)
	}

	const prefix = "cdf_ggv2_deploymentForTemplate_"
	cases := []struct {
		name        string
		things      []string
		group       string
		wantErr     errkind.Kind
		wantMissing []string
		wantGroups  map[string][]string
	}{
		{name: "move to T_2", things: []string{"a", "b", "ghost"}, group: "cdf_ggv2_deploymentForTemplate_T_2", wantMissing: []string{"ghost"},
			wantGroups: map[string][]string{
				"a": {"cdfXggv2_other", "cdf_ggv2_deploymentForTemplate_T_2", "site"},
				"b": {"cdf_ggv2_deploymentForTemplate_T_2"},
				"c": {},
			}},
		{name: "again changes nothing", things: []string{"a", "b"}, group: "cdf_ggv2_deploymentForTemplate_T_2",
			wantGroups: map[string][]string{"a": {"cdfXggv2_other", "cdf_ggv2_deploymentForTemplate_T_2", "site"}, "b": {"cdf_ggv2_deploymentForTemplate_T_2"}}},
		{name: "back to T_1", things: []string{"b", "c"}, group: "cdf_ggv2_deploymentForTemplate_T_1",
			wantGroups: map[string][]string{"a": {"cdfXggv2_other", "cdf_ggv2_deploymentForTemplate_T_2", "site"}, "b": {"cdf_ggv2_deploymentForTemplate_T_1"}, "c": {"cdf_ggv2_deploymentForTemplate_T_1"}}},
		{name: "missing group", things: []string{"a"}, group: "cdf_ggv2_deploymentForTemplate_T_9", wantErr: errkind.NotFound,
			wantGroups: map[string][]string{"a": {"cdfXggv2_other", "cdf_ggv2_deploymentForTemplate_T_2", "site"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			missing, err := s.MoveThingsToGroup(ctx, tc.things, tc.group, prefix)
			if tc.wantErr != errkind.Other {
				if !errkind.Is(err, tc.wantErr) {
					t.Fatalf("MoveThingsToGroup = %v, want kind %d", err, tc.wantErr)
				}
			} else if err != nil || !slices.Equal(missing, tc.wantMissing) {
				t.Fatalf("MoveThingsToGroup = %v, %v; want missing %v", missing, err, tc.wantMissing)
			}
			for thing, want := range tc.wantGroups {
				got, err := s.ListThingGroupsForThing(ctx, thing)
				sort.Strings(got)
				if err != nil || !slices.Equal(got, want) {
					t.Errorf("groups of %s = %v, %v; want %v", thing, got, err, want)
				}
			}
		})
	}
}
