package tasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

func TestSubmitLoadWireItems(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	now := time.UnixMilli(1_700_000_000_123).UTC()
	names := []string{"c", "a", "b"}
	id, err := tasks.Submit(ctx, st, tasks.Task{Kind: tasks.KindCore, Type: cdf.TaskCreate}, map[string]string{"coreVersion": "2.9.0"},
		names, func(n string) string { return n }, 2, now)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		kind     tasks.Kind
		notFound bool
	}{
		{name: "same kind", kind: tasks.KindCore},
		{name: "other kind", kind: tasks.KindDevice, notFound: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			task, items, err := tasks.Load(ctx, st, tc.kind, id)
			if tc.notFound {
				if !errkind.Is(err, errkind.NotFound) {
					t.Fatalf("Load = %v, want NotFound", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if task.ID != id || task.Status != cdf.StatusWaiting || task.BatchesTotal != 2 || string(task.Request) != `{"coreVersion":"2.9.0"}` {
				t.Fatalf("task = %+v", task)
			}
			// Finish the first item so its updatedAt shows; store order is reversed.
			items[0].Status, items[0].UpdatedAt = cdf.StatusSuccess, now.Add(time.Second)
			items[0], items[2] = items[2], items[0]
			wire := tasks.WireItems(items)
			if len(wire) != 3 {
				t.Fatalf("WireItems = %+v", wire)
			}
			for i, w := range wire {
				if w.Name != names[i] {
					t.Errorf("item %d = %q, want %q (request order)", i, w.Name, names[i])
				}
			}
			if wire[0].TaskStatus != cdf.StatusSuccess || wire[0].UpdatedAt.IsZero() {
				t.Errorf("finished item = %+v, want Success with updatedAt", wire[0])
			}
			if wire[1].TaskStatus != cdf.StatusWaiting || !wire[1].UpdatedAt.IsZero() {
				t.Errorf("waiting item = %+v, want Waiting with null updatedAt", wire[1])
			}
		})
	}
}
