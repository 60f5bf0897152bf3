package devices

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// GetTask returns a device task with its devices in request order; each
// device carries coreName (spec §2.4 with ggfleet's correction).
func (s *Service) GetTask(ctx context.Context, id string) (cdf.DeviceTask, error) {
	t, items, err := tasks.Load(ctx, s.cfg.Tasks, tasks.KindDevice, id)
	if err != nil {
		return cdf.DeviceTask{}, err
	}
	out := toDeviceTask(t)
	out.Devices = tasks.WireItems(items)
	for i := range out.Devices {
		out.Devices[i].CoreName = t.CoreName
	}
	return out, nil
}

// ListTasks lists device tasks in id order after the cursor (ggfleet
// addition); listed tasks have "devices": [].
func (s *Service) ListTasks(ctx context.Context, count int, after string) ([]cdf.DeviceTask, bool, error) {
	return tasks.List(ctx, s.cfg.Tasks, tasks.KindDevice, count, after, func(t tasks.Task) cdf.DeviceTask {
		dt := toDeviceTask(t)
		dt.Devices = []cdf.TaskItem{}
		return dt
	})
}

func toDeviceTask(t tasks.Task) cdf.DeviceTask {
	var req taskRequest
	_ = json.Unmarshal(t.Request, &req) // written by Submit; an unreadable one shows no options
	out := cdf.DeviceTask{
		ID:            t.ID,
		CoreName:      t.CoreName,
		TaskStatus:    t.Status,
		StatusMessage: t.StatusMessage,
		CreatedAt:     cdf.At(t.CreatedAt),
		UpdatedAt:     cdf.At(t.UpdatedAt),
		Type:          t.Type,
	}
	if t.Type == cdf.TaskDelete {
		out.Options = req.Options
		if out.Options == nil {
			out.Options = &cdf.DeviceTaskOptions{}
		}
	}
	return out
}

// GetDevice returns a client device or errkind.NotFound.
func (s *Service) GetDevice(ctx context.Context, name string) (cdf.ClientDevice, error) {
	r, err := s.cfg.Store.GetDevice(ctx, name)
	if err != nil {
		if errkind.Is(err, errkind.NotFound) {
			return cdf.ClientDevice{}, errkind.New(errkind.NotFound, "client device %q not found", name)
		}
		return cdf.ClientDevice{}, fmt.Errorf("load client device %q: %w", name, err)
	}
	out := toDevice(r)
	if r.CertsKey != "" {
		out.Artifacts = map[string]cdf.Artifact{"certs": {Bucket: r.CertsBucket, Key: r.CertsKey, CreatedAt: cdf.At(r.CertsCreatedAt)}}
	}
	return out, nil
}

// ListDevices lists client devices in name order after the cursor,
// optionally only those of one core (ggfleet addition). Items carry no artifacts.
func (s *Service) ListDevices(ctx context.Context, core string, count int, after string) ([]cdf.ClientDevice, bool, error) {
	recs, more, err := s.cfg.Store.ListDevices(ctx, core, count, after)
	if err != nil {
		return nil, false, fmt.Errorf("list client devices: %w", err)
	}
	out := make([]cdf.ClientDevice, 0, len(recs))
	for _, r := range recs {
		out = append(out, toDevice(r))
	}
	return out, more, nil
}

func toDevice(r Record) cdf.ClientDevice {
	return cdf.ClientDevice{Name: r.Name, CoreName: r.CoreName, CreatedAt: cdf.At(r.CreatedAt), UpdatedAt: cdf.At(r.UpdatedAt)}
}

// DeleteDevice is DELETE /devices/{name} (spec §8): errkind.NotFound when
// the device has no record; otherwise deprovision (errors ignored), delete
// the record, then disassociate it from its core (errors returned). No event.
func (s *Service) DeleteDevice(ctx context.Context, name string, deprovision, disassociate bool) error {
	r, err := s.cfg.Store.GetDevice(ctx, name)
	if err != nil {
		if errkind.Is(err, errkind.NotFound) {
			return errkind.New(errkind.NotFound, "client device %q not found", name)
		}
		return fmt.Errorf("load client device %q: %w", name, err)
	}
	if err := s.forget(ctx, name, deprovision); err != nil {
		return err
	}
	if disassociate && r.CoreName != "" {
		failures, err := s.cfg.Provider.DisassociateClientDevices(ctx, r.CoreName, []string{name})
		if err != nil {
			return fmt.Errorf("disassociate client device %q from core %q: %w", name, r.CoreName, err)
		}
		if reason, bad := failures[name]; bad {
			return fmt.Errorf("disassociate client device %q from core %q: %s", name, r.CoreName, reason)
		}
	}
	return nil
}
