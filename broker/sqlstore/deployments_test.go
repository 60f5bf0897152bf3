package sqlstore

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/deploy"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

func TestExpandingTask(t *testing.T) {
	ctx := context.Background()
	db, queued := newTaskTestDB(t)
	now := time.UnixMilli(1_700_000_000_000).UTC()
	task := tasks.Task{ID: "dep000001", Kind: tasks.KindDeployment, CreatedAt: now, Request: []byte(`{"a":1}`)}
	if err := db.CreateExpandingTask(ctx, task); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(*queued, []tasks.BatchRef{{TaskID: "dep000001", Batch: tasks.ExpandBatch}}) {
		t.Fatalf("queued = %v", *queued)
	}
	got, err := db.GetTask(ctx, "dep000001")
	if err != nil || got.Status != cdf.StatusWaiting || got.BatchesTotal != 0 || string(got.Request) != `{"a":1}` {
		t.Fatalf("task = %+v, %v", got, err)
	}
	items := []tasks.Item{{Name: "c1", Batch: 0}, {Name: "c2", Seq: 1, Batch: 1}}
	for i := range items {
		items[i].CreatedAt = now
	}
	added, err := db.AddItems(ctx, "dep000001", items, 2, now)
	if err != nil || !added {
		t.Fatalf("AddItems = %v, %v", added, err)
	}
	if len(*queued) != 3 || (*queued)[2] != (tasks.BatchRef{TaskID: "dep000001", Batch: 1}) {
		t.Fatalf("queued = %v", *queued)
	}
	added, err = db.AddItems(ctx, "dep000001", items, 2, now)
	if err != nil || added {
		t.Fatalf("second AddItems = %v, %v", added, err)
	}
	if list, _ := db.ListItems(ctx, "dep000001"); len(list) != 2 || list[0].Status != cdf.StatusWaiting {
		t.Fatalf("items = %+v", list)
	}

	if err := db.FailTask(ctx, "dep000001", "first", now); err != nil {
		t.Fatal(err)
	}
	if err := db.FailTask(ctx, "dep000001", "second", now); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.GetTask(ctx, "dep000001"); got.Status != cdf.StatusFailure || got.StatusMessage != "first" {
		t.Fatalf("failed task = %+v", got)
	}
	if err := db.FailTask(ctx, "missing", "x", now); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("FailTask of a missing task = %v", err)
	}
	// A failed task is never expanded.
	if err := db.CreateExpandingTask(ctx, tasks.Task{ID: "dep000002", Kind: tasks.KindDeployment, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	_ = db.FailTask(ctx, "dep000002", "no", now)
	if added, err := db.AddItems(ctx, "dep000002", items, 2, now); err != nil || added {
		t.Fatalf("AddItems on a failed task = %v, %v", added, err)
	}
}

func TestDeploymentStore(t *testing.T) {
	ctx := context.Background()
	db, _ := newTaskTestDB(t)
	now := time.UnixMilli(1_700_000_000_000).UTC()
	if err := db.Cores().EnsureCores(ctx, []string{"c1", "c2"}, now); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"taskA0001", "taskB0001"} {
		if err := db.CreateExpandingTask(ctx, tasks.Task{ID: id, Kind: tasks.KindDeployment, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		items := []tasks.Item{{Name: "c1", CreatedAt: now}, {Name: "c2", Seq: 1, CreatedAt: now}}
		if _, err := db.AddItems(ctx, id, items, 1, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Cores().SetDesiredTemplate(ctx, "c1", "T", 2, cdf.DeploymentStatusInProgress, now); err != nil {
		t.Fatal(err)
	}
	if err := db.Cores().SetDesiredTemplate(ctx, "nope", "T", 2, cdf.DeploymentStatusInProgress, now); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("SetDesiredTemplate of a missing core = %v", err)
	}

	// Documents.
	doc := deploy.Document{Core: "c1", TaskID: "taskA0001", DeploymentID: "d-A", TemplateName: "T", TemplateVersion: 2, Payload: []byte(`{"x":1}`), UpdatedAt: now}
	if _, found, err := db.PutDocument(ctx, doc); err != nil || found {
		t.Fatalf("first PutDocument = %v, %v", found, err)
	}
	if _, err := db.GetDocument(ctx, "c2"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("GetDocument of c2 = %v", err)
	}
	doc2 := doc
	doc2.Core = "c2"
	if _, _, err := db.PutDocument(ctx, doc2); err != nil {
		t.Fatal(err)
	}
	if docs, err := db.ListDocuments(ctx, "c1", 10); err != nil || len(docs) != 1 || docs[0].Core != "c2" || string(docs[0].Payload) != `{"x":1}` {
		t.Fatalf("ListDocuments = %+v, %v", docs, err)
	}

	// Waits keep their first deadline.
	w := deploy.Wait{TaskID: "taskA0001", Core: "c1", DeploymentID: "d-A", Deadline: now.Add(time.Minute)}
	if err := db.PutWait(ctx, w); err != nil {
		t.Fatal(err)
	}
	w2 := w
	w2.Deadline = now.Add(time.Hour)
	if err := db.PutWait(ctx, w2); err != nil {
		t.Fatal(err)
	}
	if ws, err := db.OverdueWaits(ctx, now.Add(2*time.Minute), 10); err != nil || len(ws) != 1 || !ws[0].Deadline.Equal(now.Add(time.Minute)) {
		t.Fatalf("OverdueWaits = %+v, %v", ws, err)
	}
	if ws, _ := db.OverdueWaits(ctx, now, 10); len(ws) != 0 {
		t.Fatalf("nothing is overdue yet: %+v", ws)
	}
	if err := db.PutWait(ctx, deploy.Wait{TaskID: "taskA0001", Core: "c2", DeploymentID: "d-A", Deadline: now}); err != nil {
		t.Fatal(err)
	}
	if ws, _ := db.WaitsForCore(ctx, "c1"); len(ws) != 1 {
		t.Fatalf("WaitsForCore = %+v", ws)
	}

	// The new document of c1 supersedes d-A: its outcome leaves the core alone.
	doc3 := doc
	doc3.TaskID, doc3.DeploymentID = "taskB0001", "d-B"
	prev, found, err := db.PutDocument(ctx, doc3)
	if err != nil || !found || prev.DeploymentID != "d-A" {
		t.Fatalf("PutDocument = %+v %v %v", prev, found, err)
	}
	out := deploy.Outcome{TaskID: "taskA0001", Core: "c1", DeploymentID: "d-A", Status: cdf.StatusFailure, Message: "m",
		CoreStatus: cdf.DeploymentStatusFailure, CoreMessage: "m", Now: now}
	fin, err := db.Finish(ctx, out)
	if err != nil || !fin.Changed || fin.Batch != 0 || fin.BatchDone {
		t.Fatalf("Finish = %+v %v; want changed, batch 0, c2 still open", fin, err)
	}
	if r, _ := db.Cores().GetCore(ctx, "c1"); r.DeploymentStatus != cdf.DeploymentStatusInProgress {
		t.Fatalf("superseded outcome touched the core: %+v", r)
	}
	if fin, _ := db.Finish(ctx, out); fin.Changed {
		t.Fatal("second Finish changed the item again")
	}
	if ws, _ := db.WaitsForCore(ctx, "c1"); len(ws) != 0 {
		t.Fatalf("wait not removed: %+v", ws)
	}

	// The current deployment's outcome is applied.
	ok := deploy.Outcome{TaskID: "taskB0001", Core: "c1", DeploymentID: "d-B", Status: cdf.StatusSuccess,
		CoreStatus: cdf.DeploymentStatusSuccessful, Reported: &cdf.TemplateRef{Name: "T", Version: 2}, Now: now.Add(time.Second)}
	if fin, err := db.Finish(ctx, ok); err != nil || !fin.Changed || fin.BatchDone {
		t.Fatalf("Finish = %+v %v", fin, err)
	}
	r, _ := db.Cores().GetCore(ctx, "c1")
	if r.DeploymentStatus != cdf.DeploymentStatusSuccessful || r.ReportedName != "T" || r.ReportedVersion != 2 || r.DesiredVersion != 2 {
		t.Fatalf("core = %+v", r)
	}
	it, err := db.GetTaskItem(ctx, "taskB0001", "c1")
	if err != nil || it.Status != cdf.StatusSuccess || !it.UpdatedAt.Equal(now.Add(time.Second)) {
		t.Fatalf("item = %+v, %v", it, err)
	}
	if _, err := db.GetTaskItem(ctx, "taskB0001", "c9"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("GetTaskItem of a missing core = %v", err)
	}
	// An outcome for a task that no longer exists drops its wait.
	_ = db.PutWait(ctx, deploy.Wait{TaskID: "gone00001", Core: "c1", DeploymentID: "x", Deadline: now})
	if fin, err := db.Finish(ctx, deploy.Outcome{TaskID: "gone00001", Core: "c1", Status: cdf.StatusFailure, Now: now}); err != nil || fin.Changed {
		t.Fatalf("Finish of a missing item = %+v %v", fin, err)
	}
	if ws, _ := db.WaitsForCore(ctx, "c1"); len(ws) != 0 {
		t.Fatalf("wait of a missing task kept: %+v", ws)
	}

	// Pending batches: taskB's batch becomes pending once c2 is final too.
	if refs, err := db.PendingBatches(ctx); err != nil || len(refs) != 0 {
		t.Fatalf("PendingBatches = %v, %v", refs, err)
	}
	if fin, err := db.Finish(ctx, deploy.Outcome{TaskID: "taskB0001", Core: "c2", Status: cdf.StatusFailure, Now: now}); err != nil || !fin.Changed || !fin.BatchDone {
		t.Fatalf("Finish of the batch's last item = %+v %v; want it done", fin, err)
	}
	if refs, _ := db.PendingBatches(ctx); !slices.Equal(refs, []tasks.BatchRef{{TaskID: "taskB0001", Batch: 0}}) {
		t.Fatalf("PendingBatches = %v", refs)
	}
	if _, err := db.CompleteBatch(ctx, "taskB0001", 0, true, "", now); err != nil {
		t.Fatal(err)
	}
	if refs, _ := db.PendingBatches(ctx); len(refs) != 0 {
		t.Fatalf("PendingBatches after completion = %v", refs)
	}

	// Reads.
	items, more, err := db.ListTaskItems(ctx, "taskA0001", 1, "")
	if err != nil || !more || len(items) != 1 || items[0].Name != "c1" {
		t.Fatalf("ListTaskItems = %+v %v %v", items, more, err)
	}
	items, more, _ = db.ListTaskItems(ctx, "taskA0001", 1, "c1")
	if more || len(items) != 1 || items[0].Name != "c2" {
		t.Fatalf("ListTaskItems page 2 = %+v %v", items, more)
	}
	cds, more, err := db.ListCoreDeployments(ctx, "c1", 1, "")
	if err != nil || !more || len(cds) != 1 || cds[0].Item.TaskID != "taskA0001" || !cds[0].TaskCreatedAt.Equal(now) {
		t.Fatalf("ListCoreDeployments = %+v %v %v", cds, more, err)
	}
	cds, more, _ = db.ListCoreDeployments(ctx, "c1", 5, "taskA0001")
	if more || len(cds) != 1 || cds[0].Item.TaskID != "taskB0001" || cds[0].Item.Status != cdf.StatusSuccess {
		t.Fatalf("ListCoreDeployments page 2 = %+v %v", cds, more)
	}
}
