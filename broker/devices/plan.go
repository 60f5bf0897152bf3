package devices

import (
	"context"
	"fmt"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Plan answers POST /cores/{core}/deviceTasks?dryRun=true: it checks the
// task and the core as Submit does and says, per client device, whether a
// Create task would make it or find it already there, or whether a Delete
// task would remove it or find nothing. It writes nothing.
func (s *Service) Plan(ctx context.Context, core string, t cdf.NewDeviceTask) (cdf.DeviceTaskPlan, error) {
	if err := s.checkSubmit(ctx, core, t); err != nil {
		return cdf.DeviceTaskPlan{}, err
	}
	plan := cdf.DeviceTaskPlan{DryRun: true, Type: t.Type, CoreName: core, Devices: make([]cdf.ItemPlan, 0, len(t.Devices))}
	for _, d := range t.Devices {
		rec, err := s.cfg.Store.GetDevice(ctx, d.Name)
		exists := err == nil
		if err != nil && !errkind.Is(err, errkind.NotFound) {
			return cdf.DeviceTaskPlan{}, fmt.Errorf("look up client device %q: %w", d.Name, err)
		}
		it := cdf.ItemPlan{Name: d.Name}
		switch {
		case t.Type == cdf.TaskCreate && exists && rec.CoreName != core:
			it.Action, it.Message = cdf.PlanExists, fmt.Sprintf("the client device already exists and belongs to core %s; the task moves it to core %s", rec.CoreName, core)
		case t.Type == cdf.TaskCreate && exists:
			it.Action, it.Message = cdf.PlanExists, "the client device already exists; its item re-checks the thing and certificate"
		case t.Type == cdf.TaskCreate:
			it.Action = cdf.PlanCreate
		case exists:
			it.Action = cdf.PlanDelete
		default:
			it.Action, it.Message = cdf.PlanNotFound, "no such client device; its item deletes whatever the provider still holds under this name"
		}
		plan.Devices = append(plan.Devices, it)
	}
	return plan, nil
}
