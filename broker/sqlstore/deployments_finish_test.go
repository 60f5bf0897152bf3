package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// FinishMany gives every outcome the result Finish gives it applied one by
// one, and leaves the items, waits and cores in the same state: first of
// two outcomes of one item counts, a final item and a gone task change
// nothing, a superseded deployment changes its item but not its core, and
// the outcome that completes each batch says so.
func TestFinishManyMatchesFinish(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1_700_000_000_000).UTC()
	outs := []deploy.Outcome{
		{TaskID: "taskA0001", Core: "core-01", DeploymentID: "d1", Status: cdf.StatusSuccess, CoreStatus: cdf.DeploymentStatusSuccessful,
			Reported: &cdf.TemplateRef{Name: "T", Version: 1}, Now: now.Add(1 * time.Second)},
		{TaskID: "taskA0001", Core: "core-02", DeploymentID: "d1", Status: cdf.StatusFailure, Message: "broken",
			CoreStatus: cdf.DeploymentStatusFailure, CoreMessage: "broken", Now: now.Add(2 * time.Second)},
		{TaskID: "taskA0001", Core: "core-01", DeploymentID: "d1", Status: cdf.StatusFailure, Message: "late",
			CoreStatus: cdf.DeploymentStatusFailure, CoreMessage: "late", Now: now.Add(3 * time.Second)},
		{TaskID: "taskA0001", Core: "core-03", DeploymentID: "d1", Status: cdf.StatusSuccess, CoreStatus: cdf.DeploymentStatusSuccessful, Now: now.Add(4 * time.Second)},
		{TaskID: "taskA0001", Core: "core-05", DeploymentID: "d1", Status: cdf.StatusSuccess, CoreStatus: cdf.DeploymentStatusSuccessful,
			Reported: &cdf.TemplateRef{Name: "T", Version: 1}, Now: now.Add(5 * time.Second)},
		{TaskID: "gone00001", Core: "core-01", DeploymentID: "d0", Status: cdf.StatusFailure, Now: now.Add(6 * time.Second)},
		{TaskID: "taskA0001", Core: "core-04", DeploymentID: "d1", Status: cdf.StatusSuccess, Now: now.Add(7 * time.Second)},
	}
	setup := func(t *testing.T) *DB {
		t.Helper()
		db, _ := newTaskTestDB(t)
		task, items := newTestTask("taskA0001", tasks.KindDeployment, 5, 2) // batches: core-05 core-04 | core-03 core-02 | core-01
		if err := db.CreateTask(ctx, task, items); err != nil {
			t.Fatal(err)
		}
		names := []string{"core-01", "core-02", "core-03", "core-04", "core-05"}
		if err := db.Cores().EnsureCores(ctx, names, now); err != nil {
			t.Fatal(err)
		}
		var waits []deploy.Wait
		var docs []deploy.Document
		for _, it := range items {
			waits = append(waits, deploy.Wait{TaskID: task.ID, Core: it.Name, Batch: it.Seq / 2, DeploymentID: "d1", Deadline: now.Add(time.Hour)})
			dep := "d1"
			if it.Name == "core-05" {
				dep = "d2" // superseded by a newer deployment
			}
			docs = append(docs, deploy.Document{Core: it.Name, TaskID: task.ID, DeploymentID: dep, TemplateName: "T", TemplateVersion: 1,
				Payload: []byte(`{}`), UpdatedAt: now})
		}
		waits = append(waits, deploy.Wait{TaskID: "gone00001", Core: "core-01", DeploymentID: "d0", Deadline: now.Add(time.Hour)})
		if _, err := db.PutDeployments(ctx, waits, docs); err != nil {
			t.Fatal(err)
		}
		if err := db.UpdateItems(ctx, []tasks.Item{{TaskID: task.ID, Name: "core-03", Status: cdf.StatusSuccess, UpdatedAt: now}}); err != nil {
			t.Fatal(err)
		}
		return db
	}
	state := func(t *testing.T, db *DB) string {
		t.Helper()
		var b strings.Builder
		for _, q := range []string{
			`SELECT name, status, status_message, updated_at FROM task_items ORDER BY task_id, name`,
			`SELECT task_id, core FROM deployment_waits ORDER BY task_id, core`,
			`SELECT name, deployment_status, deployment_status_message, reported_name, reported_version, updated_at FROM cores ORDER BY name`,
		} {
			rows, err := db.sql.QueryContext(ctx, db.q(q))
			if err != nil {
				t.Fatal(err)
			}
			cols, _ := rows.Columns()
			for rows.Next() {
				vals := make([]any, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					t.Fatal(err)
				}
				for i, v := range vals {
					if bs, ok := v.([]byte); ok {
						vals[i] = string(bs)
					}
				}
				fmt.Fprintln(&b, vals...)
			}
			rows.Close()
			b.WriteString("--\n")
		}
		return b.String()
	}

	one := setup(t)
	want := make([]deploy.Finished, len(outs))
	for i, o := range outs {
		fin, err := one.Finish(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = fin
	}
	many := setup(t)
	got, err := many.FinishMany(ctx, outs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range outs {
		if got[i] != want[i] {
			t.Errorf("outcome %d (%s %s): FinishMany = %+v, Finish = %+v", i, outs[i].TaskID, outs[i].Core, got[i], want[i])
		}
	}
	if s1, s2 := state(t, one), state(t, many); s1 != s2 {
		t.Fatalf("state after Finish one by one:\n%s\nafter FinishMany:\n%s", s1, s2)
	}
	if again, err := many.FinishMany(ctx, outs); err != nil || !unchangedOnly(again) {
		t.Fatalf("FinishMany again = %+v, %v; want nothing changed", again, err)
	}
}

// unchangedOnly reports whether no result changed an item or completed a batch.
func unchangedOnly(fs []deploy.Finished) bool {
	for _, f := range fs {
		if f.Changed || f.BatchDone {
			return false
		}
	}
	return true
}
