package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Submit stores a new Waiting task with one Waiting item per input, so core
// and device tasks are queued the same way. t gives the task's Kind, Type and
// CoreName; the task gets a new id, req (as JSON) as its Request, and its
// items in request order, named by name, holding their input as JSON, in
// batches of batchSize. It returns the new task id.
func Submit[In any](ctx context.Context, st Store, t Task, req any, inputs []In, name func(In) string, batchSize int, now time.Time) (string, error) {
	reqJSON, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("encode task: %w", err)
	}
	t.ID = NewID()
	t.Status = cdf.StatusWaiting
	t.CreatedAt = now
	t.Request = reqJSON
	items := make([]Item, len(inputs))
	for i, input := range inputs {
		in, err := json.Marshal(input)
		if err != nil {
			return "", fmt.Errorf("encode %s %q: %w", t.Kind, name(input), err)
		}
		items[i] = Item{TaskID: t.ID, Name: name(input), Status: cdf.StatusWaiting, CreatedAt: now, Input: in}
	}
	t.BatchesTotal = Batches(items, batchSize)
	if err := st.CreateTask(ctx, t, items); err != nil {
		return "", fmt.Errorf("create %s task: %w", t.Kind, err)
	}
	return t.ID, nil
}

// Load returns a task of the given kind with its items. A task that does
// not exist, or is of another kind, is errkind.NotFound.
func Load(ctx context.Context, st Store, kind Kind, id string) (Task, []Item, error) {
	t, err := st.GetTask(ctx, id)
	if err != nil || t.Kind != kind {
		if err == nil || errkind.Is(err, errkind.NotFound) {
			return Task{}, nil, errkind.New(errkind.NotFound, "%s task %q not found", kind, id)
		}
		return Task{}, nil, fmt.Errorf("load %s task %s: %w", kind, id, err)
	}
	items, err := st.ListItemStates(ctx, id)
	if err != nil {
		return Task{}, nil, fmt.Errorf("load %ss of task %s: %w", kind, id, err)
	}
	return t, items, nil
}

// List lists up to count tasks of one kind in id order after the cursor,
// each in the wire form view gives it, and whether more exist.
func List[T any](ctx context.Context, st Store, kind Kind, count int, after string, view func(Task) T) ([]T, bool, error) {
	list, more, err := st.ListTasks(ctx, kind, count, after)
	if err != nil {
		return nil, false, fmt.Errorf("list %s tasks: %w", kind, err)
	}
	out := make([]T, 0, len(list))
	for _, t := range list {
		out = append(out, view(t))
	}
	return out, more, nil
}

// WireItems converts task items to their wire form in request order;
// updatedAt is null while an item is Waiting (cdf.Time is null when zero).
func WireItems(items []Item) []cdf.TaskItem {
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, func(a, b Item) int { return a.Seq - b.Seq })
	out := make([]cdf.TaskItem, 0, len(sorted))
	for _, it := range sorted {
		ti := cdf.TaskItem{
			Name:          it.Name,
			TaskStatus:    it.Status,
			StatusMessage: it.StatusMessage,
			CreatedAt:     cdf.At(it.CreatedAt),
			UpdatedAt:     cdf.At(it.UpdatedAt),
		}
		if it.Status == cdf.StatusWaiting || it.Status == "" {
			ti.TaskStatus, ti.UpdatedAt = cdf.StatusWaiting, cdf.Time{}
		}
		out = append(out, ti)
	}
	return out
}
