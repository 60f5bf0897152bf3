package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/events"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

func TestBatchPadded(t *testing.T) {
	cases := []struct{ n, want int }{
		{0, 1}, {1, 1}, {2, 4}, {4, 4}, {5, 16}, {50, 64}, {64, 64}, {65, 256}, {256, 256}, {257, 500}, {500, 500},
	}
	for _, tc := range cases {
		if got := batchPadded(tc.n); got != tc.want {
			t.Errorf("batchPadded(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
	if got := fmt.Sprint(chunks(1001)); got != "[[0 500] [500 1000] [1000 1001]]" {
		t.Errorf("chunks(1001) = %s", got)
	}
	if got := chunks(0); len(got) != 0 {
		t.Errorf("chunks(0) = %v", got)
	}
}

// countRows returns SELECT COUNT(*) of query.
func countRows(t *testing.T, db *DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.sql.QueryRowContext(context.Background(), db.q(query), args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// The set-based batch statements write their rows in chunks of batchRows,
// each padded with NULL rows: every row is written once, whatever the count
// around a chunk's boundary, and a missing item still saves nothing.
func TestBatchStatementsAtChunkBoundaries(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1_700_000_000_000).UTC()
	for _, n := range []int{0, 1, batchRows, batchRows + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			db, _ := newTaskTestDB(t)

			// CreateTask and UpdateItems.
			task, items := newTestTask("chunk0001", tasks.KindCore, n, 50)
			if err := db.CreateTask(ctx, task, items); err != nil {
				t.Fatal(err)
			}
			list, err := db.ListItems(ctx, task.ID)
			if err != nil || len(list) != n {
				t.Fatalf("ListItems = %d items, %v; want %d", len(list), err, n)
			}
			for _, it := range list {
				want := items[it.Seq]
				if it.Name != want.Name || it.Batch != it.Seq/50 || string(it.Input) != string(want.Input) ||
					!it.CreatedAt.Equal(task.CreatedAt) || it.Status != cdf.StatusWaiting {
					t.Fatalf("item %+v, want %+v created at %v", it, want, task.CreatedAt)
				}
			}
			upd := make([]tasks.Item, n)
			for i, it := range items {
				upd[i] = tasks.Item{TaskID: task.ID, Name: it.Name, Status: cdf.StatusInProgress, StatusMessage: "m" + it.Name,
					Progress: []byte(`{"i":` + fmt.Sprint(i) + `}`), UpdatedAt: now}
			}
			if err := db.UpdateItems(ctx, upd); err != nil {
				t.Fatal(err)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM task_items WHERE task_id = ? AND status = ? AND updated_at = ? AND status_message = 'm' || name`,
				task.ID, cdf.StatusInProgress, millis(now)); got != n {
				t.Fatalf("%d items updated, want %d", got, n)
			}
			ghost := tasks.Item{TaskID: task.ID, Name: "ghost", Status: cdf.StatusSuccess, UpdatedAt: now}
			withGhost := append([]tasks.Item{}, upd...)
			for i := range withGhost {
				withGhost[i].Status = cdf.StatusSuccess
			}
			withGhost = append(withGhost, ghost)
			err = db.UpdateItems(ctx, withGhost)
			if !errkind.Is(err, errkind.NotFound) || !strings.Contains(err.Error(), `"ghost"`) {
				t.Fatalf("UpdateItems with a missing item = %v, want NotFound naming it", err)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM task_items WHERE status = ?`, cdf.StatusSuccess); got != 0 {
				t.Fatalf("%d items saved by a failed UpdateItems, want 0", got)
			}

			// AddItems, the expansion of a deployment task.
			dep := tasks.Task{ID: "chunkdep1", Kind: tasks.KindDeployment, Type: cdf.TaskCreate, Status: cdf.StatusWaiting, CreatedAt: now}
			if err := db.CreateTask(ctx, dep, nil); err != nil {
				t.Fatal(err)
			}
			depItems := make([]tasks.Item, n)
			for i := range depItems {
				depItems[i] = tasks.Item{TaskID: dep.ID, Name: fmt.Sprintf("core-%04d", i), Status: cdf.StatusWaiting, CreatedAt: now}
			}
			total := tasks.Batches(depItems, 50)
			if ok, err := db.AddItems(ctx, dep.ID, depItems, max(total, 1), now); err != nil || !ok {
				t.Fatalf("AddItems = %v, %v", ok, err)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM task_items WHERE task_id = ? AND created_at = ? AND input = '{}'`, dep.ID, millis(now)); got != n {
				t.Fatalf("AddItems stored %d items, want %d", got, n)
			}

			// EnsureCores: new cores, then again with one more, existing ones kept.
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("core-%04d", i)
			}
			cores := db.Cores()
			if err := cores.EnsureCores(ctx, names, now); err != nil {
				t.Fatal(err)
			}
			if err := cores.SetDesiredTemplates(ctx, names, "T", 3, "Pending", now); err != nil {
				t.Fatal(err)
			}
			if err := cores.EnsureCores(ctx, append(names, "core-new"), now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM cores WHERE desired_name = 'T' AND created_at = ?`, millis(now)); got != n {
				t.Fatalf("%d cores kept their template, want %d", got, n)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM cores WHERE name = 'core-new' AND desired_name = 'None' AND deployment_status = 'None' AND created_at = ?`,
				millis(now.Add(time.Hour))); got != 1 {
				t.Fatalf("core-new recorded %d times, want 1", got)
			}

			// PutDeployments: the first stores, a re-run keeps the waits and returns the documents.
			waits := make([]deploy.Wait, n)
			docs := make([]deploy.Document, n)
			for i, c := range names {
				waits[i] = deploy.Wait{TaskID: dep.ID, Core: c, Batch: i / 50, DeploymentID: "d1", Deadline: now.Add(time.Minute)}
				docs[i] = deploy.Document{Core: c, TaskID: dep.ID, DeploymentID: "d1", TemplateName: "T", TemplateVersion: 3,
					Payload: []byte(`{"c":"` + c + `"}`), UpdatedAt: now}
			}
			if prev, err := db.PutDeployments(ctx, waits, docs); err != nil || len(prev) != 0 {
				t.Fatalf("PutDeployments = %d previous, %v", len(prev), err)
			}
			for i := range waits {
				waits[i].Deadline = now.Add(time.Hour)
			}
			prev, err := db.PutDeployments(ctx, waits, docs)
			if err != nil || len(prev) != n {
				t.Fatalf("PutDeployments again = %d previous, %v; want %d", len(prev), err, n)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM deployment_waits WHERE task_id = ? AND deadline = ? AND batch * 50 <= CAST(substr(core, 6) AS INTEGER)`,
				dep.ID, millis(now.Add(time.Minute))); got != n {
				t.Fatalf("%d waits kept their first deadline, want %d", got, n)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM deployment_documents WHERE template_version = 3 AND document = '{"c":"' || core || '"}'`); got != n {
				t.Fatalf("%d documents stored, want %d", got, n)
			}

			// MoveThingsToGroup.
			reg := db.Registry()
			for _, c := range names {
				if err := reg.CreateThing(ctx, provider.Thing{Name: c, CreatedAt: now}); err != nil {
					t.Fatal(err)
				}
			}
			for _, g := range []string{"g", "gold"} {
				if err := reg.CreateThingGroup(ctx, g, "", now); err != nil {
					t.Fatal(err)
				}
			}
			if missing, err := reg.MoveThingsToGroup(ctx, names, "gold", "g"); err != nil || len(missing) != 0 {
				t.Fatalf("MoveThingsToGroup gold = %v, %v", missing, err)
			}
			for range 2 {
				missing, err := reg.MoveThingsToGroup(ctx, append(names, "ghost"), "g", "g")
				if err != nil || fmt.Sprint(missing) != "[ghost]" {
					t.Fatalf("MoveThingsToGroup = %v, %v", missing, err)
				}
				if got := countRows(t, db, `SELECT COUNT(*) FROM registry_group_members WHERE group_name = 'g'`); got != n {
					t.Fatalf("%d members of g, want %d", got, n)
				}
				if got := countRows(t, db, `SELECT COUNT(*) FROM registry_group_members WHERE group_name = 'gold'`); got != 0 {
					t.Fatalf("%d things still in gold, want 0", got)
				}
			}

			// RegisteredCores and WaitsForCores, looked up in chunks.
			for _, c := range names[len(names)/2:] {
				if err := reg.MarkCoreRegistered(ctx, c, now); err != nil {
					t.Fatal(err)
				}
			}
			registered, err := reg.RegisteredCores(ctx, append(names, "ghost"))
			if err != nil || len(registered) != n-n/2 || registered["ghost"] {
				t.Fatalf("RegisteredCores = %d, %v; want %d", len(registered), err, n-n/2)
			}
			gotWaits, err := db.WaitsForCores(ctx, names)
			if err != nil || len(gotWaits) != n {
				t.Fatalf("WaitsForCores = %d waits, %v; want %d", len(gotWaits), err, n)
			}
			for i, w := range gotWaits {
				if w.Core != names[i] {
					t.Fatalf("WaitsForCores[%d] = %s, want %s (ordered by task and core)", i, w.Core, names[i])
				}
			}

			// FinishMany: every item final, every wait gone, each batch completed once.
			outs := make([]deploy.Outcome, n)
			for i, c := range names {
				outs[i] = deploy.Outcome{TaskID: dep.ID, Core: c, DeploymentID: "d1", Status: cdf.StatusSuccess,
					CoreStatus: cdf.DeploymentStatusSuccessful, Now: now}
			}
			fins, err := db.FinishMany(ctx, outs)
			if err != nil || len(fins) != n {
				t.Fatalf("FinishMany = %d, %v", len(fins), err)
			}
			done := 0
			for i, f := range fins {
				if !f.Changed || f.Batch != i/50 {
					t.Fatalf("FinishMany[%d] = %+v, want changed in batch %d", i, f, i/50)
				}
				if f.BatchDone {
					done++
				}
			}
			if done != total {
				t.Fatalf("%d outcomes completed a batch, want %d (one per batch)", done, total)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM task_items WHERE task_id = ? AND status = ?`, dep.ID, cdf.StatusSuccess); got != n {
				t.Fatalf("%d items final, want %d", got, n)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM deployment_waits WHERE task_id = ?`, dep.ID); got != 0 {
				t.Fatalf("%d waits left, want 0", got)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM cores WHERE deployment_status = ?`, cdf.DeploymentStatusSuccessful); got != n {
				t.Fatalf("%d cores Successful, want %d", got, n)
			}

			// AppendEvents: keyed events stored once.
			evs := make([]events.Event, n)
			for i, c := range names {
				evs[i] = events.Event{Source: "s", DetailType: events.CoreCreated, Time: now, Detail: []byte(`{}`), Key: c}
			}
			seqs, added, err := db.AppendEvents(ctx, evs)
			if err != nil || len(seqs) != n {
				t.Fatalf("AppendEvents = %d, %v", len(seqs), err)
			}
			for i := range seqs {
				if seqs[i] != int64(i+1) || !added[i] {
					t.Fatalf("event %d = %d, %v; want %d, true", i, seqs[i], added[i], i+1)
				}
			}
			again, added, err := db.AppendEvents(ctx, append(evs, events.Event{Source: "s", DetailType: events.CoreCreated, Time: now, Detail: []byte(`{}`)}))
			if err != nil || fmt.Sprint(again[:n]) != fmt.Sprint(seqs) || again[n] != int64(n+1) || !added[n] {
				t.Fatalf("AppendEvents again = %v, %v, %v", again, added, err)
			}
			if got := countRows(t, db, `SELECT COUNT(*) FROM events`); got != n+1 {
				t.Fatalf("%d events stored, want %d", got, n+1)
			}
		})
	}
}

// An item or document given twice in one batch is saved as its last
// occurrence, as one statement per row did.
func TestBatchDuplicatesLastWins(t *testing.T) {
	ctx := context.Background()
	db, _ := newTaskTestDB(t)
	now := time.UnixMilli(1_700_000_000_000).UTC()
	task, items := newTestTask("dup000001", tasks.KindCore, 2, 10)
	if err := db.CreateTask(ctx, task, items); err != nil {
		t.Fatal(err)
	}
	err := db.UpdateItems(ctx, []tasks.Item{
		{TaskID: task.ID, Name: "core-01", Status: cdf.StatusInProgress, UpdatedAt: now},
		{TaskID: task.ID, Name: "core-02", Status: cdf.StatusInProgress, UpdatedAt: now},
		{TaskID: task.ID, Name: "core-01", Status: cdf.StatusSuccess, StatusMessage: "done", UpdatedAt: now},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, db, `SELECT COUNT(*) FROM task_items WHERE name = 'core-01' AND status = ? AND status_message = 'done'`, cdf.StatusSuccess); got != 1 {
		t.Fatalf("core-01 not saved as its last occurrence")
	}
	doc := func(dep string) deploy.Document {
		return deploy.Document{Core: "c1", TaskID: task.ID, DeploymentID: dep, TemplateName: "T", TemplateVersion: 1, Payload: []byte(`{}`), UpdatedAt: now}
	}
	w := deploy.Wait{TaskID: task.ID, Core: "c1", DeploymentID: "d1", Deadline: now}
	w2 := w
	w2.DeploymentID = "d2"
	if _, err := db.PutDeployments(ctx, []deploy.Wait{w, w2}, []deploy.Document{doc("d1"), doc("d2")}); err != nil {
		t.Fatal(err)
	}
	d, err := db.GetDocument(ctx, "c1")
	if err != nil || d.DeploymentID != "d2" {
		t.Fatalf("document = %+v, %v; want the last, d2", d, err)
	}
	if got := countRows(t, db, `SELECT COUNT(*) FROM deployment_waits WHERE deployment_id = 'd1'`); got != 1 {
		t.Fatalf("the first wait was not kept")
	}
	twice, dupItems := newTestTask("dup000002", tasks.KindCore, 3, 10)
	dupItems[2].Name = dupItems[0].Name
	if err := db.CreateTask(ctx, twice, dupItems); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("CreateTask with an item name twice = %v, want Conflict", err)
	}
	if got := countRows(t, db, `SELECT COUNT(*) FROM task_items WHERE task_id = ?`, twice.ID); got != 0 {
		t.Fatalf("%d items stored by a failed CreateTask", got)
	}
}

// A lookup of more names than an engine binds in one statement (SQLite
// 32,766 parameters, PostgreSQL 65,535) is split, not refused.
func TestLookupsBeyondParameterLimits(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	now := time.UnixMilli(1_700_000_000_000).UTC()
	names := make([]string, 70_000)
	for i := range names {
		names[i] = fmt.Sprintf("core-%05d", i)
	}
	reg := db.Registry()
	last := names[len(names)-1]
	if err := reg.MarkCoreRegistered(ctx, last, now); err != nil {
		t.Fatal(err)
	}
	registered, err := reg.RegisteredCores(ctx, names)
	if err != nil || len(registered) != 1 || !registered[last] {
		t.Fatalf("RegisteredCores of %d names = %v, %v; want only %s", len(names), registered, err, last)
	}
	if waits, err := db.WaitsForCores(ctx, names); err != nil || len(waits) != 0 {
		t.Fatalf("WaitsForCores of %d names = %d, %v", len(names), len(waits), err)
	}
	if err := db.Cores().SetDesiredTemplates(ctx, names, "T", 1, "Pending", now); err != nil {
		t.Fatalf("SetDesiredTemplates of %d names: %v", len(names), err)
	}
}
