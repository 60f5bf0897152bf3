// Package devices runs client-device tasks (bulk provisioning and deletion
// of the client devices of a Greengrass core, spec §2.4, §4.3) and serves the
// client-device records, including DELETE /devices/{name} (§8) and the
// removal of a core's devices when the core is deleted.
package devices

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/ggfleet/ggfleet/broker/cores"
	"github.com/ggfleet/ggfleet/broker/cores/thingflow"
	"github.com/ggfleet/ggfleet/broker/devices/devicestore"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

type (
	// Record is a stored client device.
	Record = devicestore.Record
	// Store persists client-device records.
	Store = devicestore.Store
)

// Event detail-types emitted by device tasks.
const (
	EventDeviceCreated = "Device Created Event"
	EventDeviceDeleted = "Device Deleted Event"
)

// DeviceEvent is the detail of Device Created/Deleted Event (spec §9).
type DeviceEvent struct {
	TaskID     string `json:"taskId"`
	DeviceName string `json:"deviceName"`
	Status     string `json:"status"` // success | failed
	Message    string `json:"message,omitempty"`
}

// EventKey names the task item the event is about (the device within its
// task), so an item re-run after a crash publishes its event once
// (events.Keyed).
func (e DeviceEvent) EventKey() string {
	if e.TaskID == "" {
		return ""
	}
	return e.TaskID + "/" + e.DeviceName
}

// BatchSize is the number of devices per batch (spec §4.0).
const BatchSize = 20

// MaxDevices is the most devices one task may name.
const MaxDevices = 10000

// Config holds the Service's dependencies.
type Config struct {
	Store       Store
	Tasks       tasks.Store
	Provider    provider.Provider
	Provisioner thingflow.Provisioner
	Events      func(ctx context.Context, detailType string, detail any) // optional
	// EventsAll, when set, publishes many events of one type in one go
	// (the events of a batch worked whole).
	EventsAll func(ctx context.Context, detailType string, details []any)
	// Atomic, when set, runs fn with a context in which every store and
	// the provider write in one transaction; called within one, under a
	// savepoint (sqlstore.DB.Atomically, local mode). Create tasks are then
	// worked whole batch at a time (batch.go).
	Atomic func(ctx context.Context, fn func(ctx context.Context) error) error
	// BatchReads, when set, returns the context a Create batch of the
	// devices names is worked in (lookups remembered for the batch or made
	// for all its devices at once; see cores.Config.BatchReads).
	BatchReads func(ctx context.Context, names []string) context.Context
	Logger     *slog.Logger
	Now        func() time.Time
}

// Service runs device tasks and serves client devices. It is the
// tasks.Processor of tasks.KindDevice and the cores.DeviceRemover.
type Service struct {
	cfg  Config
	log  *slog.Logger
	flow *thingflow.Flow
}

var _ cores.DeviceRemover = (*Service)(nil)

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, log: cfg.Logger, flow: &thingflow.Flow{Provider: cfg.Provider, Provisioner: cfg.Provisioner, Now: cfg.Now}}
}

// taskRequest is the part of a device task stored as tasks.Task.Request.
type taskRequest struct {
	Options *cdf.DeviceTaskOptions `json:"options,omitempty"`
}

// Validate checks a device task request (not the core); errors are
// errkind.Invalid with a message naming the field to fix.
func Validate(t cdf.NewDeviceTask) error {
	if t.Type != cdf.TaskCreate && t.Type != cdf.TaskDelete {
		return errkind.New(errkind.Invalid, "type must be %q or %q, got %q", cdf.TaskCreate, cdf.TaskDelete, t.Type)
	}
	if len(t.Devices) == 0 {
		return errkind.New(errkind.Invalid, "devices must list at least one client device")
	}
	if len(t.Devices) > MaxDevices {
		return errkind.New(errkind.Invalid, "devices lists %d devices: at most %d per task, split it into several tasks", len(t.Devices), MaxDevices)
	}
	if t.Type == cdf.TaskDelete && t.Options == nil {
		return errkind.New(errkind.Invalid, "options is required for a Delete task: send {\"deprovisionClientDevices\":true|false}")
	}
	seen := make(map[string]int, len(t.Devices))
	for i, d := range t.Devices {
		if !cores.ValidName(d.Name) {
			return errkind.New(errkind.Invalid, "devices[%d].name %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and - (no ':' and no non-ASCII characters)", i, d.Name)
		}
		if j, dup := seen[d.Name]; dup {
			return errkind.New(errkind.Invalid, "devices[%d].name %q repeats devices[%d]: name each device once per task", i, d.Name, j)
		}
		seen[d.Name] = i
		if d.ProvisioningTemplate == "" {
			return errkind.New(errkind.Invalid, "devices[%d].provisioningTemplate is required (also for Delete, where any placeholder will do)", i)
		}
	}
	return nil
}

// Submit validates a device task for core, writes the device records
// (linked to the core) and queues the task. The core must exist and be
// registered (enrolled or connected); otherwise the request is invalid.
func (s *Service) Submit(ctx context.Context, core string, t cdf.NewDeviceTask) (string, error) {
	if err := s.checkSubmit(ctx, core, t); err != nil {
		return "", err
	}
	now := s.cfg.Now()
	names := make([]string, len(t.Devices))
	for i, d := range t.Devices {
		names[i] = d.Name
	}
	if err := s.cfg.Store.PutDevices(ctx, core, names, now); err != nil {
		return "", fmt.Errorf("record client devices: %w", err)
	}
	req := taskRequest{}
	if t.Type == cdf.TaskDelete {
		req.Options = t.Options
	}
	id, err := tasks.Submit(ctx, s.cfg.Tasks, tasks.Task{Kind: tasks.KindDevice, Type: t.Type, CoreName: core}, req, t.Devices,
		func(d cdf.NewDevice) string { return d.Name }, BatchSize, now)
	if err != nil {
		return "", err
	}
	s.log.Info("device task submitted", "task", id, "type", t.Type, "core", core, "devices", len(t.Devices))
	return id, nil
}

// checkSubmit validates a device task and its core (it must exist and be
// registered); Submit and Plan share it.
func (s *Service) checkSubmit(ctx context.Context, core string, t cdf.NewDeviceTask) error {
	if !cores.ValidName(core) {
		return errkind.New(errkind.Invalid, "core name %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and -", core)
	}
	if err := Validate(t); err != nil {
		return err
	}
	ok, err := s.cfg.Store.CoreExists(ctx, core)
	if err != nil {
		return fmt.Errorf("look up core %q: %w", core, err)
	}
	if !ok {
		return errkind.New(errkind.Invalid, "core %q does not exist: create it with a Create core task (POST /coreTasks) first", core)
	}
	if _, err := s.cfg.Provider.GetCoreDevice(ctx, core); err != nil {
		if errkind.Is(err, errkind.NotFound) {
			return errkind.New(errkind.Invalid, "core %q is not registered with Greengrass V2 yet: it has not enrolled or connected; install and start it (ggagent install), then retry", core)
		}
		return fmt.Errorf("check core device %q: %w", core, err)
	}
	return nil
}

func (s *Service) emit(ctx context.Context, detailType string, detail any) {
	if s.cfg.Events != nil {
		s.cfg.Events(ctx, detailType, detail)
	}
}

// ProcessItem works one client device of a device task (tasks.Processor).
func (s *Service) ProcessItem(ctx context.Context, t tasks.Task, it *tasks.Item, save func(context.Context) error) error {
	var in cdf.NewDevice
	var req taskRequest
	if !thingflow.DecodeItem(t, it, "device", &in, &req) {
		return nil
	}
	prog, saver, err := thingflow.ItemProgress(it, save)
	if err != nil {
		return err
	}
	switch t.Type {
	case cdf.TaskCreate:
		return s.create(ctx, s.flow, s.emit, t, in, it, &prog, saver)
	case cdf.TaskDelete:
		deprovision := req.Options != nil && req.Options.DeprovisionClientDevices
		return s.deleteItem(ctx, t, it, deprovision, &prog, saver)
	}
	it.Status, it.StatusMessage = cdf.StatusFailure, fmt.Sprintf("unknown task type %q", t.Type)
	return nil
}

// create is spec §4.3a: provision unless the thing exists (and is not our
// own interrupted provisioning). flow provisions and emit takes the event:
// the service's own for an item worked alone, a flow with the key and
// certificate made beforehand and an event held until the commit for an
// item worked in a batch (batch.go).
func (s *Service) create(ctx context.Context, flow *thingflow.Flow, emit thingflow.Emit, t tasks.Task, in cdf.NewDevice, it *tasks.Item, prog *thingflow.Progress, save thingflow.Saver) error {
	out, err := flow.Run(ctx, in.Name, thingflow.ToRequest(in.ProvisioningTemplate, in.ProvisioningParameters, in.CdfProvisioningParameters), prog, save)
	if err != nil {
		f, ok := thingflow.AsFailure(err)
		if !ok {
			return err
		}
		it.Status, it.StatusMessage = cdf.StatusFailure, f.Msg
		emit(ctx, EventDeviceCreated, DeviceEvent{TaskID: t.ID, DeviceName: in.Name, Status: "failed", Message: f.Msg})
		return nil
	}
	if out.AlreadyExists {
		it.Status, it.StatusMessage = cdf.StatusSuccess, "Client device already registered"
		return nil
	}
	if out.Certs != nil {
		// A record removed meanwhile (DELETE /devices) is written again.
		err := s.cfg.Store.RecordCerts(ctx, t.CoreName, in.Name, out.Certs.Bucket, out.Certs.Key, out.Certs.CreatedAt.Time, s.cfg.Now())
		if err != nil {
			return fmt.Errorf("record certs of client device %q: %w", in.Name, err)
		}
	}
	it.Status, it.StatusMessage = cdf.StatusSuccess, ""
	emit(ctx, EventDeviceCreated, DeviceEvent{TaskID: t.ID, DeviceName: in.Name, Status: "success"})
	return nil
}

// deleteItem is spec §4.3b.
func (s *Service) deleteItem(ctx context.Context, t tasks.Task, it *tasks.Item, deprovision bool, prog *thingflow.Progress, save thingflow.Saver) error {
	name := it.Name
	if !prog.Deleting {
		if _, err := s.cfg.Store.GetDevice(ctx, name); err != nil {
			if errkind.Is(err, errkind.NotFound) {
				it.Status, it.StatusMessage = cdf.StatusFailure, "DEVICE_NOT_FOUND"
				return nil
			}
			return fmt.Errorf("load client device %q: %w", name, err)
		}
		prog.Deleting = true
		if err := save(ctx, *prog); err != nil {
			return err
		}
	}
	if err := s.forget(ctx, name, deprovision); err != nil {
		return err
	}
	it.Status, it.StatusMessage = cdf.StatusSuccess, ""
	s.emit(ctx, EventDeviceDeleted, DeviceEvent{TaskID: t.ID, DeviceName: name, Status: "success"})
	return nil
}

// forget deprovisions (when asked) and deletes the record of a device.
// Errors other than transient ones are logged and ignored (spec §4.3b, §8).
func (s *Service) forget(ctx context.Context, name string, deprovision bool) error {
	if deprovision {
		if err := s.cfg.Provider.DeleteThing(ctx, name); err != nil {
			if thingflow.Transient(err) {
				return fmt.Errorf("delete thing %q: %w", name, err)
			}
			s.log.Warn("deprovision client device failed; continuing", "device", name, "err", err)
		}
	}
	if err := s.cfg.Store.DeleteDevice(ctx, name); err != nil && !errkind.Is(err, errkind.NotFound) {
		if thingflow.Transient(err) {
			return fmt.Errorf("delete client device record %q: %w", name, err)
		}
		s.log.Warn("delete client device record failed; continuing", "device", name, "err", err)
	}
	return nil
}

// AfterBatch associates the created devices with the core, or
// disassociates the deleted ones (tasks.Processor).
func (s *Service) AfterBatch(ctx context.Context, t tasks.Task, items []*tasks.Item) error {
	var names []string
	for _, it := range items {
		if t.Type == cdf.TaskDelete || it.Status == cdf.StatusSuccess {
			names = append(names, it.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	var (
		failures map[string]string
		err      error
		msg      string
	)
	if t.Type == cdf.TaskCreate {
		failures, err = s.cfg.Provider.AssociateClientDevices(ctx, t.CoreName, names)
		msg = "Client device cannot be associated with core " + t.CoreName
	} else {
		failures, err = s.cfg.Provider.DisassociateClientDevices(ctx, t.CoreName, names)
		msg = "Client device cannot be disassociated with core " + t.CoreName
	}
	if err != nil {
		if thingflow.Transient(err) {
			return fmt.Errorf("core %q: %w", t.CoreName, err)
		}
		s.log.Warn("client device (dis)association failed", "task", t.ID, "core", t.CoreName, "err", err)
		failures = make(map[string]string, len(names))
		for _, n := range names {
			failures[n] = err.Error()
		}
	}
	for _, it := range items {
		if _, bad := failures[it.Name]; bad && it.Status == cdf.StatusSuccess {
			s.log.Info("client device (dis)association failed", "task", t.ID, "device", it.Name, "reason", failures[it.Name])
			it.Status, it.StatusMessage = cdf.StatusFailure, msg
		}
	}
	return nil
}

// RemoveCoreDevices removes every client device of a core being deleted:
// those associated with it and those recorded under it. Each is
// deprovisioned when asked, disassociated, and its record deleted; a
// Device Deleted Event is emitted per device with the core task's id.
func (s *Service) RemoveCoreDevices(ctx context.Context, taskID, core string, deprovision bool) error {
	set := map[string]bool{}
	assoc, err := s.cfg.Provider.ListClientDevices(ctx, core)
	if err != nil && !errkind.Is(err, errkind.NotFound) {
		if thingflow.Transient(err) {
			return fmt.Errorf("list client devices of core %q: %w", core, err)
		}
		return fmt.Errorf("list client devices of core %s: %v", core, err)
	}
	var associated []string
	for _, a := range assoc {
		set[a.ThingName] = true
		associated = append(associated, a.ThingName)
	}
	after := ""
	for {
		recs, more, err := s.cfg.Store.ListDevices(ctx, core, 1000, after)
		if err != nil {
			return fmt.Errorf("list client device records of core %q: %w", core, errkind.Wrap(errkind.Unavailable, err, "database"))
		}
		for _, r := range recs {
			set[r.Name] = true
		}
		if !more || len(recs) == 0 {
			break
		}
		after = recs[len(recs)-1].Name
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(associated) > 0 {
		failures, err := s.cfg.Provider.DisassociateClientDevices(ctx, core, associated)
		if err != nil {
			if thingflow.Transient(err) {
				return fmt.Errorf("disassociate client devices of core %q: %w", core, err)
			}
			//lint:ignore ST1005 the text is CDF's per-item status message
			return fmt.Errorf("Client devices cannot be disassociated with core %s: %v", core, err)
		}
		if len(failures) > 0 {
			bad := make([]string, 0, len(failures))
			for n := range failures {
				bad = append(bad, n)
			}
			slices.Sort(bad)
			//lint:ignore ST1005 the text is CDF's per-item status message
			return fmt.Errorf("Client device cannot be disassociated with core %s: %v", core, bad)
		}
	}
	for _, n := range names {
		if err := s.forget(ctx, n, deprovision); err != nil {
			return err
		}
		s.emit(ctx, EventDeviceDeleted, DeviceEvent{TaskID: taskID, DeviceName: n, Status: "success"})
	}
	return nil
}
