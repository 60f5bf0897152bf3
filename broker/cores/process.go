package cores

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ggfleet/ggfleet/broker/cores/thingflow"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// ProcessItem works one core of a core task (tasks.Processor).
func (s *Service) ProcessItem(ctx context.Context, t tasks.Task, it *tasks.Item, save func(context.Context) error) error {
	var in cdf.NewCore
	var req taskRequest
	if !thingflow.DecodeItem(t, it, "core", &in, &req) {
		return nil
	}
	prog, saver, err := thingflow.ItemProgress(it, save)
	if err != nil {
		return err
	}
	switch t.Type {
	case cdf.TaskCreate:
		return s.create(ctx, createRun{flow: s.flow, emit: s.emit}, t, req, in, it, &prog, saver)
	case cdf.TaskDelete:
		return s.delete(ctx, t, req, in.Name, it, &prog, saver)
	}
	it.Status, it.StatusMessage = cdf.StatusFailure, fmt.Sprintf("unknown task type %q", t.Type)
	return nil
}

// AfterBatch has nothing to do for core tasks (tasks.Processor).
func (s *Service) AfterBatch(ctx context.Context, t tasks.Task, items []*tasks.Item) error {
	return nil
}

// outcome applies err to the item: nil stays, a *thingflow.Failure fails
// the item, anything else is transient and returned.
func failed(it *tasks.Item, err error) (handled bool, transient error) {
	if err == nil {
		return false, nil
	}
	if f, ok := thingflow.AsFailure(err); ok {
		it.Status, it.StatusMessage = cdf.StatusFailure, f.Msg
		return true, nil
	}
	return true, err
}

// createRun is how create provisions and where its event goes: the
// service's flow and events for an item worked alone, a flow with the
// item's key and certificate made beforehand and an event list published
// after the commit for items worked whole-batch (batch.go).
type createRun struct {
	flow *thingflow.Flow
	emit func(ctx context.Context, detailType string, detail any)
	// config is the installer config made beforehand (nil: make it when
	// it is needed).
	config *generated
}

// generated is the outcome of Config.ConfigGen.
type generated struct {
	text string
	err  error
}

// create is spec §4.1 with ggfleet's corrections: crash-safe, resumable.
func (s *Service) create(ctx context.Context, run createRun, t tasks.Task, req taskRequest, in cdf.NewCore, it *tasks.Item, prog *thingflow.Progress, save thingflow.Saver) error {
	name := in.Name
	if !prog.Started && !prog.Provisioned {
		_, err := s.cfg.Provider.GetCoreDevice(ctx, name)
		switch {
		case err == nil:
			it.Status, it.StatusMessage = cdf.StatusSuccess, "Core device already registered"
			return nil
		case errkind.Is(err, errkind.NotFound):
		case thingflow.Transient(err):
			return fmt.Errorf("get core device %q: %w", name, err)
		default:
			it.Status, it.StatusMessage = cdf.StatusFailure, err.Error()
			return nil
		}
	}
	if err := s.cfg.Provider.CreateThingGroup(ctx, name, "Greengrass V2 thing group for core "+name); err != nil {
		if thingflow.Transient(err) {
			return fmt.Errorf("create thing group %q: %w", name, err)
		}
		s.createdEvent(ctx, run, t, it, cdf.StatusFailure, err.Error())
		return nil
	}

	out, err := run.flow.Run(ctx, name, thingflow.ToRequest(in.ProvisioningTemplate, in.ProvisioningParameters, in.CdfProvisioningParameters), prog, save)
	if handled, terr := failed(it, err); handled {
		if terr != nil {
			return terr
		}
		s.createdEvent(ctx, run, t, it, cdf.StatusFailure, it.StatusMessage)
		return nil
	}
	if out.AlreadyExists {
		it.Status, it.StatusMessage = cdf.StatusSuccess, "Core device thing already provisioned"
		return nil
	}
	if out.Certs != nil {
		if err := s.recordArtifact(ctx, name, ArtifactCerts, *out.Certs); err != nil {
			return err
		}
	}

	if in.ConfigFileGenerator != "" && prog.Config == nil {
		msg, err := s.config(ctx, run, req, in, it, prog)
		if err != nil {
			return err
		}
		if msg != "" {
			s.createdEvent(ctx, run, t, it, cdf.StatusFailure, msg)
			return nil
		}
	}
	if prog.Config != nil {
		if err := s.recordArtifact(ctx, name, ArtifactConfig, *prog.Config); err != nil {
			return err
		}
	}
	s.createdEvent(ctx, run, t, it, cdf.StatusSuccess, "")
	return nil
}

// config renders and stores the installer config. It returns the item's
// failure message, or a transient error.
//
// The config's location is staged in the item's progress, not saved on its
// own: the item's final save records it. A crash before that re-runs this
// step, which writes the same file again (atomically) and records the same
// artifact, so the extra write per core is not worth it.
func (s *Service) config(ctx context.Context, run createRun, req taskRequest, in cdf.NewCore, it *tasks.Item, prog *thingflow.Progress) (string, error) {
	alias := in.ConfigFileGenerator
	if s.cfg.ConfigGen == nil {
		return "Unrecognized generator alias: " + alias, nil
	}
	g := run.config
	if g == nil {
		g = s.generate(req, in)
	}
	text, err := g.text, g.err
	switch {
	case err == nil:
	case errors.Is(err, ErrUnknownGenerator) || strings.HasPrefix(err.Error(), "Unrecognized generator alias"):
		return "Unrecognized generator alias: " + alias, nil
	case thingflow.Transient(err):
		return "", fmt.Errorf("generate installer config for %q: %w", in.Name, err)
	default:
		return "Failed creating config: " + err.Error(), nil
	}
	key := thingflow.ConfigKey(in.Name)
	bucket, err := s.cfg.Provider.PutArtifact(ctx, key, "application/yaml", []byte(text))
	if err != nil {
		if thingflow.Transient(err) {
			return "", fmt.Errorf("store installer config of %q: %w", in.Name, err)
		}
		return "Failed uploading certs: " + err.Error(), nil // sic, spec §4.1 step 4.3
	}
	prog.Config = &cdf.Artifact{Bucket: bucket, Key: key, CreatedAt: cdf.At(s.cfg.Now())}
	if err := thingflow.Stage(it, *prog); err != nil {
		return "", err
	}
	return "", nil
}

// generate renders a core's installer config (no side effects).
func (s *Service) generate(req taskRequest, in cdf.NewCore) *generated {
	text, err := s.cfg.ConfigGen(in.ConfigFileGenerator, ConfigInput{
		CoreName:             in.Name,
		CoreVersion:          req.CoreVersion,
		ProvisioningTemplate: in.ProvisioningTemplate,
		Parameters:           in.ProvisioningParameters,
	})
	return &generated{text: text, err: err}
}

func (s *Service) recordArtifact(ctx context.Context, core, kind string, a cdf.Artifact) error {
	err := s.cfg.Store.PutArtifact(ctx, ArtifactRecord{Core: core, Kind: kind, Bucket: a.Bucket, Key: a.Key, CreatedAt: a.CreatedAt.Time})
	if err != nil {
		return fmt.Errorf("record %s artifact of core %q: %w", kind, core, err)
	}
	return nil
}

// createdEvent finishes a Create item that was newly provisioned or failed,
// and emits Core Created Event.
func (s *Service) createdEvent(ctx context.Context, run createRun, t tasks.Task, it *tasks.Item, status, msg string) {
	it.Status, it.StatusMessage = status, msg
	ev := CoreEvent{CoreName: it.Name, Status: "success", TaskID: t.ID}
	if status == cdf.StatusFailure {
		ev.Status, ev.Message = "failed", msg
		s.log.Info("core create failed", "task", t.ID, "core", it.Name, "reason", msg)
	}
	run.emit(ctx, EventCoreCreated, ev)
}

// delete is spec §4.2 with ggfleet's corrections: client devices are removed
// inline (never a stuck task), deprovisionCores decides the core's thing.
func (s *Service) delete(ctx context.Context, t tasks.Task, req taskRequest, name string, it *tasks.Item, prog *thingflow.Progress, save thingflow.Saver) error {
	var opts cdf.CoreTaskOptions
	if req.Options != nil {
		opts = *req.Options
	}
	if !prog.Deleting {
		if _, err := s.cfg.Store.GetCore(ctx, name); err != nil {
			if errkind.Is(err, errkind.NotFound) {
				it.Status, it.StatusMessage = cdf.StatusFailure, "CORE_NOT_FOUND"
				return nil
			}
			return fmt.Errorf("load core %q: %w", name, err)
		}
		prog.Deleting = true
		if err := save(ctx, *prog); err != nil {
			return err
		}
	}
	fail := func(msg string) error {
		it.Status, it.StatusMessage = cdf.StatusFailure, msg
		s.emit(ctx, EventCoreDeleted, CoreEvent{CoreName: name, Status: "failed", TaskID: t.ID, Message: msg})
		return nil
	}
	if s.cfg.Devices != nil {
		if err := s.cfg.Devices.RemoveCoreDevices(ctx, t.ID, name, opts.DeprovisionClientDevices); err != nil {
			if thingflow.Transient(err) {
				return fmt.Errorf("remove client devices of core %q: %w", name, err)
			}
			return fail(err.Error())
		}
	}
	if err := s.cfg.Provider.DeleteCoreDevice(ctx, name); err != nil {
		if thingflow.Transient(err) {
			return fmt.Errorf("delete core device %q: %w", name, err)
		}
		s.log.Warn("delete core device failed; continuing", "core", name, "err", err) // ignored, spec §4.2
	}
	if opts.DeprovisionCores {
		if s.cfg.Revoker != nil {
			if err := s.cfg.Revoker.RevokeThing(ctx, name); err != nil {
				return fmt.Errorf("revoke the certificates of core %q: %w", name, err)
			}
		}
		if err := s.cfg.Provider.DeleteThing(ctx, name); err != nil {
			if thingflow.Transient(err) {
				return fmt.Errorf("delete thing %q: %w", name, err)
			}
			s.log.Warn("deprovision core failed", "core", name, "err", err)
			return fail("Core cannot be removed from IoT service")
		}
	}
	if err := s.cfg.Store.DeleteCore(ctx, name); err != nil && !errkind.Is(err, errkind.NotFound) {
		if thingflow.Transient(err) {
			return fmt.Errorf("delete core record %q: %w", name, err)
		}
		s.log.Warn("delete core record failed", "core", name, "err", err)
		return fail("Core cannot be removed from asset library")
	}
	it.Status, it.StatusMessage = cdf.StatusSuccess, ""
	s.emit(ctx, EventCoreDeleted, CoreEvent{CoreName: name, Status: "success", TaskID: t.ID})
	return nil
}
