package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// newTaskTestDB opens a migrated SQLite database in a temporary directory
// whose enqueue hook records the batches it is given.
func newTaskTestDB(t *testing.T) (*DB, *[]tasks.BatchRef) {
	t.Helper()
	db := newTestDB(t)
	var enqueued []tasks.BatchRef
	db.SetEnqueuer(func(ctx context.Context, tx *sql.Tx, refs []tasks.BatchRef) error {
		if tx == nil {
			return errors.New("enqueue called without a transaction")
		}
		enqueued = append(enqueued, refs...)
		return nil
	})
	return db, &enqueued
}

// newTestTask builds a task of n items in batches of size.
func newTestTask(id string, kind tasks.Kind, n, size int) (tasks.Task, []tasks.Item) {
	now := time.UnixMilli(1_700_000_000_123).UTC()
	items := make([]tasks.Item, n)
	for i := range items {
		items[i] = tasks.Item{
			TaskID: id, Name: fmt.Sprintf("core-%02d", n-i), Status: cdf.StatusWaiting,
			Input: json.RawMessage(fmt.Sprintf(`{"name":"core-%02d"}`, n-i)),
		}
	}
	total := tasks.Batches(items, size)
	return tasks.Task{
		ID: id, Kind: kind, Type: cdf.TaskCreate, Status: cdf.StatusWaiting, CreatedAt: now,
		Request: json.RawMessage(`{"coreVersion":"2.9.0"}`), BatchesTotal: total,
	}, items
}

func TestTaskLifecycle(t *testing.T) {
	ctx := context.Background()
	db, enqueued := newTaskTestDB(t)
	task, items := newTestTask("abcdefghi", tasks.KindCore, 5, 2)
	if err := db.CreateTask(ctx, task, items); err != nil {
		t.Fatal(err)
	}
	want := []tasks.BatchRef{{TaskID: "abcdefghi", Batch: 0}, {TaskID: "abcdefghi", Batch: 1}, {TaskID: "abcdefghi", Batch: 2}}
	if fmt.Sprint(*enqueued) != fmt.Sprint(want) {
		t.Fatalf("enqueued %v, want %v", *enqueued, want)
	}

	got, err := db.GetTask(ctx, "abcdefghi")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != cdf.StatusWaiting || !got.UpdatedAt.IsZero() || got.BatchesTotal != 3 ||
		!got.CreatedAt.Equal(task.CreatedAt) || string(got.Request) != `{"coreVersion":"2.9.0"}` || got.Kind != tasks.KindCore {
		t.Fatalf("stored task = %+v", got)
	}

	all, err := db.ListItems(ctx, "abcdefghi")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 || all[0].Name != "core-05" || all[4].Name != "core-01" || all[0].Progress != nil ||
		string(all[0].Input) != `{"name":"core-05"}` || !all[0].CreatedAt.Equal(task.CreatedAt) {
		t.Fatalf("items not in request order or not as stored: %+v", all)
	}
	batch1, err := db.ListBatchItems(ctx, "abcdefghi", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(batch1) != 2 || batch1[0].Name != "core-03" || batch1[1].Name != "core-02" {
		t.Fatalf("batch 1 = %+v", batch1)
	}

	now := time.UnixMilli(1_700_000_100_000).UTC()
	if err := db.StartTask(ctx, "abcdefghi", now); err != nil {
		t.Fatal(err)
	}
	it := batch1[0]
	it.Status, it.Progress, it.UpdatedAt = cdf.StatusSuccess, json.RawMessage(`{"step":3}`), now
	if err := db.UpdateItem(ctx, it); err != nil {
		t.Fatal(err)
	}
	batch1, _ = db.ListBatchItems(ctx, "abcdefghi", 1)
	if batch1[0].Status != cdf.StatusSuccess || string(batch1[0].Progress) != `{"step":3}` || !batch1[0].UpdatedAt.Equal(now) {
		t.Fatalf("updated item = %+v", batch1[0])
	}
	// The view's list has every field but the input and progress.
	all, _ = db.ListItems(ctx, "abcdefghi")
	states, err := db.ListItemStates(ctx, "abcdefghi")
	if err != nil || len(states) != len(all) {
		t.Fatalf("ListItemStates = %d items, %v; want %d", len(states), err, len(all))
	}
	for i, st := range states {
		want := all[i]
		want.Input, want.Progress = nil, nil
		if !reflect.DeepEqual(st, want) {
			t.Fatalf("ListItemStates[%d] = %+v, want %+v", i, st, want)
		}
	}
	missing := it
	missing.Name = "nope"
	if err := db.UpdateItem(ctx, missing); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("UpdateItem of a missing item: %v, want NotFound", err)
	}

	for b := range 3 {
		done, err := db.CompleteBatch(ctx, "abcdefghi", b, false, "", now)
		if err != nil {
			t.Fatal(err)
		}
		wantStatus := cdf.StatusInProgress
		if b == 2 {
			wantStatus = cdf.StatusSuccess
		}
		if done.Status != wantStatus || done.BatchesComplete != b+1 || !done.UpdatedAt.Equal(now) {
			t.Fatalf("after batch %d: %+v, want status %s", b, done, wantStatus)
		}
	}
	// A finished task is not restarted.
	if err := db.StartTask(ctx, "abcdefghi", now); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.GetTask(ctx, "abcdefghi"); got.Status != cdf.StatusSuccess {
		t.Fatalf("StartTask changed a finished task to %s", got.Status)
	}

	if _, err := db.GetTask(ctx, "missing00"); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("GetTask of a missing task: %v, want NotFound", err)
	}
	if err := db.CreateTask(ctx, task, items); !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("CreateTask twice: %v, want Conflict", err)
	}
}

func TestTaskCompleteBatchIdempotentAndStickyFailure(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1_700_000_100_000).UTC()
	tests := []struct {
		name  string
		calls []struct {
			batch  int
			failed bool
			msg    string
		}
		wantStatus  string
		wantMessage string
		wantDone    int
	}{
		{
			name: "repeat counts once",
			calls: []struct {
				batch  int
				failed bool
				msg    string
			}{
				{0, false, ""}, {0, false, ""}, {0, false, ""},
			},
			wantStatus: cdf.StatusInProgress, wantDone: 1,
		},
		{
			name: "all batches once each",
			calls: []struct {
				batch  int
				failed bool
				msg    string
			}{
				{1, false, ""}, {0, false, ""}, {1, false, ""},
			},
			wantStatus: cdf.StatusSuccess, wantDone: 2,
		},
		{
			name: "failure is sticky and keeps the first message",
			calls: []struct {
				batch  int
				failed bool
				msg    string
			}{
				{0, true, "first"}, {0, true, "second"}, {1, false, ""},
			},
			wantStatus: cdf.StatusFailure, wantMessage: "first", wantDone: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, _ := newTaskTestDB(t)
			task, items := newTestTask("task00001", tasks.KindDevice, 4, 2)
			if err := db.CreateTask(ctx, task, items); err != nil {
				t.Fatal(err)
			}
			if err := db.StartTask(ctx, task.ID, now); err != nil {
				t.Fatal(err)
			}
			var last tasks.Task
			for _, c := range tc.calls {
				var err error
				if last, err = db.CompleteBatch(ctx, task.ID, c.batch, c.failed, c.msg, now); err != nil {
					t.Fatal(err)
				}
			}
			stored, err := db.GetTask(ctx, task.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, got := range []tasks.Task{last, stored} {
				if got.Status != tc.wantStatus || got.StatusMessage != tc.wantMessage || got.BatchesComplete != tc.wantDone {
					t.Fatalf("task = %s %q %d/%d, want %s %q %d", got.Status, got.StatusMessage,
						got.BatchesComplete, got.BatchesTotal, tc.wantStatus, tc.wantMessage, tc.wantDone)
				}
			}
		})
	}
}

func TestTaskListPagination(t *testing.T) {
	ctx := context.Background()
	db, _ := newTaskTestDB(t)
	ids := []string{"c00000000", "a00000000", "e00000000", "b00000000", "d00000000"}
	for _, id := range ids {
		task, items := newTestTask(id, tasks.KindCore, 1, 1)
		if err := db.CreateTask(ctx, task, items); err != nil {
			t.Fatal(err)
		}
	}
	other, items := newTestTask("aa0000000", tasks.KindDevice, 1, 1)
	if err := db.CreateTask(ctx, other, items); err != nil {
		t.Fatal(err)
	}

	var pages [][]string
	after := ""
	for {
		list, more, err := db.ListTasks(ctx, tasks.KindCore, 2, after)
		if err != nil {
			t.Fatal(err)
		}
		var page []string
		for _, task := range list {
			page = append(page, task.ID)
		}
		pages = append(pages, page)
		if !more {
			break
		}
		after = list[len(list)-1].ID
	}
	want := "[[a00000000 b00000000] [c00000000 d00000000] [e00000000]]"
	if fmt.Sprint(pages) != want {
		t.Fatalf("pages = %v, want %s", pages, want)
	}
	list, more, err := db.ListTasks(ctx, tasks.KindDevice, 10, "")
	if err != nil || more || len(list) != 1 || list[0].ID != "aa0000000" {
		t.Fatalf("device tasks = %v %v %v", list, more, err)
	}
	list, more, err = db.ListTasks(ctx, tasks.KindDeployment, 10, "")
	if err != nil || more || len(list) != 0 {
		t.Fatalf("deployment tasks = %v %v %v", list, more, err)
	}
}

func TestTaskEnqueueInsideTransaction(t *testing.T) {
	ctx := context.Background()
	db, _ := newTaskTestDB(t)

	t.Run("the hook sees the task in its transaction", func(t *testing.T) {
		db.SetEnqueuer(func(ctx context.Context, tx *sql.Tx, refs []tasks.BatchRef) error {
			var n int
			if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM task_items WHERE task_id = ?`), refs[0].TaskID).Scan(&n); err != nil {
				return err
			}
			if n != 3 {
				return fmt.Errorf("hook saw %d items, want 3", n)
			}
			return nil
		})
		task, items := newTestTask("visible00", tasks.KindCore, 3, 1)
		if err := db.CreateTask(ctx, task, items); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a failing hook rolls the task back", func(t *testing.T) {
		db.SetEnqueuer(func(ctx context.Context, tx *sql.Tx, refs []tasks.BatchRef) error {
			return errors.New("queue unavailable")
		})
		task, items := newTestTask("rolledbak", tasks.KindCore, 3, 1)
		err := db.CreateTask(ctx, task, items)
		if err == nil {
			t.Fatal("CreateTask succeeded although the enqueue hook failed")
		}
		if _, err := db.GetTask(ctx, task.ID); !errkind.Is(err, errkind.NotFound) {
			t.Fatalf("task exists after a failed enqueue: %v", err)
		}
		if list, _ := db.ListItems(ctx, task.ID); len(list) != 0 {
			t.Fatalf("%d items exist after a failed enqueue", len(list))
		}
	})

	t.Run("no hook is an error", func(t *testing.T) {
		db.SetEnqueuer(nil)
		task, items := newTestTask("nohook000", tasks.KindCore, 1, 1)
		if err := db.CreateTask(ctx, task, items); err == nil {
			t.Fatal("CreateTask without a job queue succeeded")
		}
	})
}

// TestTaskCompleteBatchConcurrently completes every batch of a task at once
// from many goroutines (replicas finishing their batches together): each is
// counted and the task ends Success. On PostgreSQL concurrent completions
// used to count only their own batch, leaving the task InProgress for ever.
func TestTaskCompleteBatchConcurrently(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1_700_000_100_000).UTC()
	db, _ := newTaskTestDB(t)
	const batches = 12
	task, items := newTestTask("task00002", tasks.KindCore, batches, 1)
	if err := db.CreateTask(ctx, task, items); err != nil {
		t.Fatal(err)
	}
	if err := db.StartTask(ctx, task.ID, now); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, batches)
	for b := range batches {
		go func() {
			_, err := db.CompleteBatch(ctx, task.ID, b, b == 3, "batch 3 failed", now)
			errs <- err
		}()
	}
	for range batches {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	stored, err := db.GetTask(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.BatchesComplete != batches || stored.Status != cdf.StatusFailure || stored.StatusMessage != "batch 3 failed" {
		t.Fatalf("task = %s %q %d/%d, want Failure %q with all %d batches counted",
			stored.Status, stored.StatusMessage, stored.BatchesComplete, stored.BatchesTotal, "batch 3 failed", batches)
	}
}

// TestHotTablesFillfactor checks, on PostgreSQL, that the pages of the
// tables whose rows are rewritten again and again are filled to half, so
// the updates stay on the row's page without index writes: task_items (an
// item's three updates, migration 0019) and core_health (every report,
// migration 0020).
func TestHotTablesFillfactor(t *testing.T) {
	if testDialect != Postgres {
		t.Skip("a PostgreSQL storage parameter; this runs in the PostgreSQL pass")
	}
	db := newTestDB(t)
	for _, table := range []string{"task_items", "core_health"} {
		var opts sql.NullString
		err := db.sql.QueryRowContext(context.Background(),
			`SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = $1::regclass`, table).Scan(&opts)
		if err != nil || opts.String != "fillfactor=50" {
			t.Errorf("%s options = %q, %v; want fillfactor=50", table, opts.String, err)
		}
	}
}

// TestItemsInRequestOrderNoSort checks, on SQLite, that listing a task's
// items (every poll of GET /coreTasks/{id}) follows an index instead of
// sorting the task's items.
func TestItemsInRequestOrderNoSort(t *testing.T) {
	if testDialect != SQLite {
		t.Skip("an SQLite plan; PostgreSQL's depends on the table's size")
	}
	db := newTestDB(t)
	for _, query := range []string{
		`SELECT ` + itemColumns + ` FROM task_items WHERE task_id = ?` + inRequestOrder,
		`SELECT ` + itemStateColumns + `, '', '' FROM task_items WHERE task_id = ?` + inRequestOrder,
	} {
		rows, err := db.sql.QueryContext(context.Background(), `EXPLAIN QUERY PLAN `+query, "t")
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if p := strings.Join(plan, "; "); strings.Contains(p, "TEMP B-TREE") || !strings.Contains(p, "task_items_batch") {
			t.Errorf("plan of %q = %s, want the task_items_batch index and no sort", query, p)
		}
	}
}
