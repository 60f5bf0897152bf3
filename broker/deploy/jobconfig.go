package deploy

import (
	"context"
	"fmt"

	"github.com/ggfleet/ggfleet/broker/templates"
)

// JobConfig returns the IoT job configuration of a deployment task's
// Greengrass deployment: its iotJobConfig over its template version's
// jobConfig, setting by setting (templates.MergeJobConfig); nil when
// neither gives one. Both were validated when they were saved.
func (s *Service) JobConfig(ctx context.Context, taskID string) (*templates.JobConfig, error) {
	t, err := s.task(ctx, taskID)
	if err != nil {
		return nil, err
	}
	req, err := decodeRequest(t)
	if err != nil {
		return nil, err
	}
	tpl, err := s.cfg.Templates.Version(ctx, req.Template.Name, req.Template.Version)
	if err != nil {
		return nil, fmt.Errorf("job configuration of task %s: %w", taskID, err)
	}
	fromTemplate, err := templates.ParseJobConfig("jobConfig", tpl.JobConfig)
	if err != nil {
		return nil, fmt.Errorf("template %s version %d: %w", tpl.Name, tpl.Version, err)
	}
	fromTask, err := templates.ParseJobConfig("iotJobConfig", req.IotJobConfig)
	if err != nil {
		return nil, fmt.Errorf("deployment task %s: %w", taskID, err)
	}
	return templates.MergeJobConfig(fromTemplate, fromTask), nil
}
