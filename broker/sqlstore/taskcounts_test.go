package sqlstore

import (
	"context"
	"maps"
	"testing"

	"github.com/ggfleet/ggfleet/broker/tasks"
)

func TestCountTasks(t *testing.T) {
	db, _ := newTaskTestDB(t)
	ctx := context.Background()

	counts, err := db.CountTasks(ctx)
	if err != nil {
		t.Fatalf("CountTasks on an empty database: %v", err)
	}
	if len(counts) != 0 {
		t.Errorf("counts = %v, want none", counts)
	}

	for _, tk := range []struct {
		id   string
		kind tasks.Kind
	}{{"core00001", tasks.KindCore}, {"core00002", tasks.KindCore}, {"core00003", tasks.KindCore}, {"devi00001", tasks.KindDevice}} {
		task, items := newTestTask(tk.id, tk.kind, 2, 20)
		if err := db.CreateTask(ctx, task, items); err != nil {
			t.Fatalf("CreateTask %s: %v", tk.id, err)
		}
	}
	if _, err := db.sql.ExecContext(ctx, db.q(`UPDATE tasks SET status = 'Success' WHERE id = ?`), "core00002"); err != nil {
		t.Fatal(err)
	}

	counts, err = db.CountTasks(ctx)
	if err != nil {
		t.Fatalf("CountTasks: %v", err)
	}
	want := map[string]map[string]int{"core": {"Waiting": 2, "Success": 1}, "device": {"Waiting": 1}}
	if len(counts) != len(want) {
		t.Fatalf("counts = %v, want %v", counts, want)
	}
	for kind, byStatus := range want {
		if !maps.Equal(counts[kind], byStatus) {
			t.Errorf("counts[%s] = %v, want %v", kind, counts[kind], byStatus)
		}
	}
}
