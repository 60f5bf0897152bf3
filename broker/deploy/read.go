package deploy

import (
	"context"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// GetTask returns a deployment task with its cores and, once its targets
// are expanded, its batch counters; errkind.NotFound if there is none.
func (s *Service) GetTask(ctx context.Context, id string) (cdf.DeploymentTask, error) {
	t, err := s.task(ctx, id)
	if err != nil {
		return cdf.DeploymentTask{}, err
	}
	out, err := wireTask(t)
	if err != nil {
		return cdf.DeploymentTask{}, err
	}
	items, err := s.cfg.Tasks.ListItemStates(ctx, t.ID)
	if err != nil {
		return cdf.DeploymentTask{}, fmt.Errorf("items of deployment task %s: %w", id, err)
	}
	for _, it := range items {
		out.Deployments = append(out.Deployments, wireItem(it, false))
	}
	if t.BatchesTotal > 0 {
		complete, total := t.BatchesComplete, t.BatchesTotal
		out.BatchesComplete, out.BatchesTotal = &complete, &total
	}
	return out, nil
}

// ListTasks returns up to count deployment tasks in id order after the
// cursor (each with "deployments":[] and no batch counters), and whether
// more exist.
func (s *Service) ListTasks(ctx context.Context, count int, after string) ([]cdf.DeploymentTask, bool, error) {
	list, more, err := s.cfg.Tasks.ListTasks(ctx, tasks.KindDeployment, count, after)
	if err != nil {
		return nil, false, fmt.Errorf("list deployment tasks: %w", err)
	}
	out := make([]cdf.DeploymentTask, 0, len(list))
	for _, t := range list {
		w, err := wireTask(t)
		if err != nil {
			return nil, false, err
		}
		out = append(out, w)
	}
	return out, more, nil
}

// ListTaskCores returns up to count cores of a task in name order after the
// cursor; errkind.NotFound if the task does not exist.
func (s *Service) ListTaskCores(ctx context.Context, id string, count int, after string) ([]cdf.CoreDeployment, bool, error) {
	if _, err := s.task(ctx, id); err != nil {
		return nil, false, err
	}
	items, more, err := s.cfg.Store.ListTaskItems(ctx, id, count, after)
	if err != nil {
		return nil, false, fmt.Errorf("cores of deployment task %s: %w", id, err)
	}
	out := make([]cdf.CoreDeployment, 0, len(items))
	for _, it := range items {
		out = append(out, wireItem(it, false))
	}
	return out, more, nil
}

// GetTaskCore returns one core of a task; errkind.NotFound if the task does
// not exist or does not include that core.
func (s *Service) GetTaskCore(ctx context.Context, id, core string) (cdf.CoreDeployment, error) {
	if _, err := s.task(ctx, id); err != nil {
		return cdf.CoreDeployment{}, err
	}
	it, err := s.cfg.Store.GetTaskItem(ctx, id, core)
	if err != nil {
		return cdf.CoreDeployment{}, err
	}
	return wireItem(it, false), nil
}

// ListCoreDeployments returns up to count deployments of a core in task id
// order after the cursor, with their task ids and the task's timestamps.
func (s *Service) ListCoreDeployments(ctx context.Context, core string, count int, after string) ([]cdf.CoreDeployment, bool, error) {
	list, more, err := s.cfg.Store.ListCoreDeployments(ctx, core, count, after)
	if err != nil {
		return nil, false, fmt.Errorf("deployments of core %s: %w", core, err)
	}
	out := make([]cdf.CoreDeployment, 0, len(list))
	for _, cd := range list {
		w := wireItem(cd.Item, true)
		w.CreatedAt, w.UpdatedAt = at(cd.TaskCreatedAt), at(cd.TaskUpdatedAt)
		out = append(out, w)
	}
	return out, more, nil
}

// task loads a deployment task; other kinds are NotFound.
func (s *Service) task(ctx context.Context, id string) (tasks.Task, error) {
	t, err := s.cfg.Tasks.GetTask(ctx, id)
	if err == nil && t.Kind != tasks.KindDeployment {
		err = errkind.New(errkind.NotFound, "task %s not found", id)
	}
	if errkind.Is(err, errkind.NotFound) {
		return tasks.Task{}, errkind.Wrap(errkind.NotFound, err, "deployment task %s not found", id)
	}
	if err != nil {
		return tasks.Task{}, fmt.Errorf("deployment task %s: %w", id, err)
	}
	return t, nil
}

func wireTask(t tasks.Task) (cdf.DeploymentTask, error) {
	req, err := decodeRequest(t)
	if err != nil {
		return cdf.DeploymentTask{}, err
	}
	return cdf.DeploymentTask{
		ID:            t.ID,
		Template:      req.Template,
		Targets:       req.Targets,
		IotJobConfig:  req.IotJobConfig,
		Deployments:   []cdf.CoreDeployment{},
		TaskStatus:    t.Status,
		StatusMessage: t.StatusMessage,
		CreatedAt:     cdf.At(t.CreatedAt),
		UpdatedAt:     at(t.UpdatedAt),
	}, nil
}

func wireItem(it tasks.Item, withTask bool) cdf.CoreDeployment {
	w := cdf.CoreDeployment{
		CoreName:      it.Name,
		TaskStatus:    it.Status,
		StatusMessage: it.StatusMessage,
		CreatedAt:     at(it.CreatedAt),
		UpdatedAt:     at(it.UpdatedAt),
	}
	if withTask {
		w.TaskID = it.TaskID
	}
	return w
}

// at is a CDF timestamp, null when t is zero.
func at(t time.Time) cdf.Time {
	if t.IsZero() {
		return cdf.Time{}
	}
	return cdf.At(t)
}
