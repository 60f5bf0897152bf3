package cores

import (
	"context"
	"fmt"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Plan answers POST /coreTasks?dryRun=true: it validates the task as Submit
// does and says, per core, whether a Create task would make it or find it
// already there, or whether a Delete task would remove it or find nothing.
// It writes nothing.
func (s *Service) Plan(ctx context.Context, t cdf.NewCoreTask) (cdf.CoreTaskPlan, error) {
	if err := Validate(t); err != nil {
		return cdf.CoreTaskPlan{}, err
	}
	plan := cdf.CoreTaskPlan{DryRun: true, Type: t.Type, Cores: make([]cdf.ItemPlan, 0, len(t.Cores))}
	for _, c := range t.Cores {
		_, err := s.cfg.Store.GetCore(ctx, c.Name)
		exists := err == nil
		if err != nil && !errkind.Is(err, errkind.NotFound) {
			return cdf.CoreTaskPlan{}, fmt.Errorf("look up core %q: %w", c.Name, err)
		}
		it := cdf.ItemPlan{Name: c.Name}
		switch {
		case t.Type == cdf.TaskCreate && exists:
			it.Action, it.Message = cdf.PlanExists, "the core already exists; its item re-checks the thing and certificate and keeps its template state"
		case t.Type == cdf.TaskCreate:
			it.Action = cdf.PlanCreate
		case exists:
			it.Action = cdf.PlanDelete
		default:
			it.Action, it.Message = cdf.PlanNotFound, "no such core; its item deletes whatever the provider still holds under this name"
		}
		plan.Cores = append(plan.Cores, it)
	}
	return plan, nil
}
