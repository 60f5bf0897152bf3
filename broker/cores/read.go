package cores

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// GetTask returns a core task with its cores in request order (spec §2.2).
func (s *Service) GetTask(ctx context.Context, id string) (cdf.CoreTask, error) {
	t, items, err := tasks.Load(ctx, s.cfg.Tasks, tasks.KindCore, id)
	if err != nil {
		return cdf.CoreTask{}, err
	}
	out := toCoreTask(t)
	out.Cores = tasks.WireItems(items)
	return out, nil
}

// GetCoreTask returns a core task only if it includes core (ggfleet addition).
func (s *Service) GetCoreTask(ctx context.Context, core, id string) (cdf.CoreTask, error) {
	t, err := s.GetTask(ctx, id)
	if err != nil {
		return t, err
	}
	if !slices.ContainsFunc(t.Cores, func(i cdf.TaskItem) bool { return i.Name == core }) {
		return cdf.CoreTask{}, errkind.New(errkind.NotFound, "core task %q does not include core %q", id, core)
	}
	return t, nil
}

// ListTasks lists core tasks in id order after the cursor; listed tasks have "cores": [].
func (s *Service) ListTasks(ctx context.Context, count int, after string) ([]cdf.CoreTask, bool, error) {
	return tasks.List(ctx, s.cfg.Tasks, tasks.KindCore, count, after, func(t tasks.Task) cdf.CoreTask {
		ct := toCoreTask(t)
		ct.Cores = []cdf.TaskItem{}
		return ct
	})
}

func toCoreTask(t tasks.Task) cdf.CoreTask {
	var req taskRequest
	_ = json.Unmarshal(t.Request, &req) // written by Submit; an unreadable one shows empty fields
	out := cdf.CoreTask{
		ID:            t.ID,
		CoreVersion:   req.CoreVersion,
		TaskStatus:    t.Status,
		StatusMessage: t.StatusMessage,
		CreatedAt:     cdf.At(t.CreatedAt),
		UpdatedAt:     cdf.At(t.UpdatedAt),
		Type:          t.Type,
	}
	if t.Type == cdf.TaskDelete {
		out.Options = req.Options
		if out.Options == nil {
			out.Options = &cdf.CoreTaskOptions{}
		}
	}
	return out
}

// GetCore returns a core with its artifacts and the live device block (spec
// §2.3, §7). A core that has not registered shows device.status "UNKNOWN".
// With Config.Greengrass (aws mode) the block comes from Greengrass;
// otherwise from the agent's health reports, or the provider's status
// until the first one.
func (s *Service) GetCore(ctx context.Context, name string) (cdf.Core, error) {
	rec, err := s.cfg.Store.GetCore(ctx, name)
	if err != nil {
		if errkind.Is(err, errkind.NotFound) {
			return cdf.Core{}, errkind.New(errkind.NotFound, "core %q not found", name)
		}
		return cdf.Core{}, fmt.Errorf("load core %q: %w", name, err)
	}
	arts, err := s.cfg.Store.ListArtifacts(ctx, name)
	if err != nil {
		return cdf.Core{}, fmt.Errorf("load artifacts of core %q: %w", name, err)
	}
	out := toCore(rec)
	if len(arts) > 0 {
		out.Artifacts = make(map[string]cdf.Artifact, len(arts))
		for _, a := range arts {
			out.Artifacts[a.Kind] = cdf.Artifact{Bucket: a.Bucket, Key: a.Key, CreatedAt: cdf.At(a.CreatedAt)}
		}
	}
	dev := &cdf.Device{
		InstalledComponents:  []cdf.InstalledComponent{},
		EffectiveDeployments: []cdf.EffectiveDeployment{},
		Status:               "UNKNOWN",
		Connectivity:         "OFFLINE",
	}
	if s.cfg.Greengrass != nil {
		// aws mode: Greengrass is the source; agents' reports only say
		// whether the agent is connected.
		if s.cfg.DeviceView != nil {
			view, _, err := s.cfg.DeviceView(ctx, name)
			if err != nil {
				s.log.Warn("read agent connectivity failed; showing OFFLINE", "core", name, "err", err)
			} else if view.Connectivity != "" {
				dev.Connectivity, dev.LastSeenAt = view.Connectivity, view.LastSeenAt
			}
		}
		s.greengrassDevice(ctx, name, dev)
		out.Device = dev
		return out, nil
	}
	if s.cfg.DeviceView != nil {
		view, ok, err := s.cfg.DeviceView(ctx, name)
		switch {
		case err != nil:
			s.log.Warn("read device view failed; asking the provider", "core", name, "err", err)
		case ok:
			out.Device = &view
			return out, nil
		default:
			if view.Connectivity != "" {
				dev.Connectivity = view.Connectivity
			}
			dev.LastSeenAt = view.LastSeenAt
		}
	}
	cd, err := s.cfg.Provider.GetCoreDevice(ctx, name)
	switch {
	case err == nil:
		dev.Status = cd.Status
		if dev.Status == "" {
			dev.Status = "UNKNOWN"
		}
		dev.CoreVersion, dev.Platform, dev.Architecture = cd.CoreVersion, cd.Platform, cd.Architecture
		dev.LastStatusUpdateTimestamp = cdf.TimePtr(cd.LastStatus)
		dev.Tags = cd.Tags
	case !errkind.Is(err, errkind.NotFound):
		s.log.Warn("get core device failed; showing status UNKNOWN", "core", name, "err", err)
	}
	if s.cfg.DeviceView == nil && s.cfg.Presence != nil {
		online, seen := s.cfg.Presence(ctx, name)
		if online {
			dev.Connectivity = "ONLINE"
		}
		dev.LastSeenAt = cdf.TimePtr(seen)
	}
	out.Device = dev
	return out, nil
}

// CoreExists returns nil when a core record exists, else errkind.NotFound.
// Unlike GetCore it reads nothing from the cloud (in aws mode GetCore costs
// three Greengrass calls).
func (s *Service) CoreExists(ctx context.Context, name string) error {
	if _, err := s.cfg.Store.GetCore(ctx, name); err != nil {
		if errkind.Is(err, errkind.NotFound) {
			return errkind.New(errkind.NotFound, "core %q not found", name)
		}
		return fmt.Errorf("load core %q: %w", name, err)
	}
	return nil
}

// ListCores lists cores in name order after the cursor, filtered (spec §2.3).
// List items carry no artifacts and no device block.
func (s *Service) ListCores(ctx context.Context, f Filter, count int, after string) ([]cdf.Core, bool, error) {
	recs, more, err := s.cfg.Store.ListCores(ctx, f, count, after)
	if err != nil {
		return nil, false, fmt.Errorf("list cores: %w", err)
	}
	out := make([]cdf.Core, 0, len(recs))
	for _, r := range recs {
		out = append(out, toCore(r))
	}
	return out, more, nil
}

func toCore(r Record) cdf.Core {
	return cdf.Core{
		Name: r.Name,
		Template: cdf.CoreTemplate{
			Desired: cdf.TemplateRef{Name: r.DesiredName, Version: r.DesiredVersion},
			Reported: cdf.ReportedTemplate{
				Name: r.ReportedName, Version: r.ReportedVersion,
				DeploymentStatus: r.DeploymentStatus, DeploymentStatusMessage: r.DeploymentStatusMessage,
			},
		},
		CreatedAt: cdf.At(r.CreatedAt),
		UpdatedAt: cdf.At(r.UpdatedAt),
	}
}
