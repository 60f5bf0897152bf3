// Package cores runs core tasks (bulk provisioning and deletion of
// Greengrass V2 core devices, spec §2.2, §4.1, §4.2) and serves the core
// records (§2.3). Work runs in the durable task engine: Submit validates and
// records the task, ProcessItem does one core, crash-safely.
package cores

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/ggfleet/ggfleet/broker/cores/corestore"
	"github.com/ggfleet/ggfleet/broker/cores/thingflow"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// The storage contract lives in package corestore (a leaf package, so the
// database edge does not depend on the task machinery); these aliases keep
// the domain vocabulary here.
type (
	// Record is a stored core.
	Record = corestore.Record
	// ArtifactRecord is where a generated file of a core was stored.
	ArtifactRecord = corestore.ArtifactRecord
	// Filter selects cores in ListCores.
	Filter = corestore.Filter
	// Store persists core records and their artifact records.
	Store = corestore.Store
	// Provisioner is the part of the provisioning service core tasks use
	// (Prepare, Provision); *provisioning.Service satisfies it.
	Provisioner = thingflow.Provisioner
)

// Default template values and artifact kinds (see corestore).
const (
	NoTemplate         = corestore.NoTemplate
	NoDeploymentStatus = corestore.NoDeploymentStatus
	ArtifactCerts      = corestore.ArtifactCerts
	ArtifactConfig     = corestore.ArtifactConfig
)

// ConfigInput is what an installer-config generator gets for one core.
type ConfigInput struct {
	CoreName             string
	CoreVersion          string
	ProvisioningTemplate string
	Parameters           map[string]string
}

// ErrUnknownGenerator is what ConfigGen returns (wrapped) for an alias it
// does not know; the item then fails with "Unrecognized generator alias: X".
var ErrUnknownGenerator = errors.New("unknown generator alias")

// DeviceRemover deletes the client devices of a core while the core is
// deleted (the devices package provides it).
type DeviceRemover interface {
	// RemoveCoreDevices deprovisions (when asked), disassociates and
	// forgets every client device of core. A returned error that is not
	// transient is reported as the core item's failure.
	RemoveCoreDevices(ctx context.Context, taskID, core string, deprovision bool) error
}

// CertificateRevoker records that a core's certificates may no longer
// connect, before its thing (and with it the certificates) is deleted: an
// external MQTT broker learns it from the CRL file (docs/mosquitto.md).
type CertificateRevoker interface {
	RevokeThing(ctx context.Context, thing string) error
}

// EventSink receives the events of core tasks (Core Created Event, Core Deleted Event).
type EventSink func(ctx context.Context, detailType string, detail any)

// PresenceFunc reports whether a core is connected now and when it was last
// seen (zero when never); optional until the MQTT side exists.
type PresenceFunc func(ctx context.Context, core string) (online bool, lastSeen time.Time)

// DeviceViewFunc returns the device block of a core as its agent reported it
// (health.Service.Device). ok is false when the core never reported health:
// GetCore then asks the provider for the status and keeps the view's
// connectivity and lastSeenAt.
type DeviceViewFunc func(ctx context.Context, core string) (dev cdf.Device, ok bool, err error)

// Config holds the Service's dependencies.
type Config struct {
	Store       Store
	Tasks       tasks.Store
	Provider    provider.Provider
	Provisioner Provisioner
	// ConfigGen renders the installer config for a generator alias; an
	// unknown alias is an error wrapping ErrUnknownGenerator. May be nil
	// (every alias is then unknown).
	ConfigGen func(alias string, in ConfigInput) (string, error)
	Devices   DeviceRemover
	Events    EventSink // optional
	// EventsAll, when set, publishes many events of one type in one go
	// (events.Service.PublishAll): the events of a whole-batch Create
	// (batch.go). Without it they go to Events one by one.
	EventsAll func(ctx context.Context, detailType string, details []any)
	Revoker   CertificateRevoker // optional
	Presence  PresenceFunc       // optional; without it cores are OFFLINE
	// DeviceView, when set, builds GET /cores/{name}'s device block (and
	// Presence is not used).
	DeviceView DeviceViewFunc
	// Greengrass, when set (aws mode), is where the device block comes
	// from (spec §7); DeviceView then only gives connectivity and lastSeenAt.
	// GetCore alone calls it: three AWS calls per core would not fit the
	// list endpoints within Greengrass's quotas.
	Greengrass Greengrass
	// Atomic, when set, runs fn with a context in which every store and
	// provider call commits together or not at all, and nested calls undo
	// only their own writes when they fail (sqlstore.DB.Atomically). Create
	// tasks then work each batch in one transaction (batch.go). Set it only
	// when the provider keeps its registry in the same database (local
	// mode): a cloud provider's calls cannot be rolled back.
	Atomic func(ctx context.Context, fn func(ctx context.Context) error) error
	// BatchReads, when set, returns the context a Create batch of the
	// cores names is worked in: reads every core of the batch would repeat
	// (its provisioning template, the CA, the policies it names) are then
	// made once, and those each core makes of its own (does its thing
	// exist?) may be made for all of them at once.
	BatchReads func(ctx context.Context, names []string) context.Context
	Logger     *slog.Logger
	Now        func() time.Time
}

// Service runs core tasks and serves core records. It is the tasks.Processor of tasks.KindCore.
type Service struct {
	cfg  Config
	log  *slog.Logger
	flow *thingflow.Flow
}

// Batch sizes (spec §4.0): Create in batches of 20, Delete one core per batch.
const (
	CreateBatchSize = 20
	DeleteBatchSize = 1
	// MaxCores is the most cores one task may name.
	MaxCores = 10000
)

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{
		cfg:  cfg,
		log:  cfg.Logger,
		flow: &thingflow.Flow{Provider: cfg.Provider, Provisioner: cfg.Provisioner, Now: cfg.Now},
	}
}

// taskRequest is the part of a core task stored as tasks.Task.Request.
type taskRequest struct {
	CoreVersion string               `json:"coreVersion"`
	Options     *cdf.CoreTaskOptions `json:"options,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

// ValidName reports whether name is a valid thing/core/device name (DESIGN.md: Names).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Validate checks a core task request; errors are errkind.Invalid with a
// message naming the field to fix. configFileGenerator is not checked here:
// an unknown alias fails that core with "Unrecognized generator alias: X"
// (spec §4.1), as in CDF.
func Validate(t cdf.NewCoreTask) error {
	if t.Type != cdf.TaskCreate && t.Type != cdf.TaskDelete {
		return errkind.New(errkind.Invalid, "type must be %q or %q, got %q", cdf.TaskCreate, cdf.TaskDelete, t.Type)
	}
	if t.CoreVersion == "" {
		return errkind.New(errkind.Invalid, "coreVersion is required (the Greengrass nucleus version, for example \"2.5.0\"; also for Delete)")
	}
	if len(t.Cores) == 0 {
		return errkind.New(errkind.Invalid, "cores must list at least one core")
	}
	if len(t.Cores) > MaxCores {
		return errkind.New(errkind.Invalid, "cores lists %d cores: at most %d per task, split it into several tasks", len(t.Cores), MaxCores)
	}
	if t.Type == cdf.TaskDelete && t.Options == nil {
		return errkind.New(errkind.Invalid, "options is required for a Delete task: send {\"deprovisionCores\":true|false,\"deprovisionClientDevices\":true|false}")
	}
	seen := make(map[string]int, len(t.Cores))
	for i, c := range t.Cores {
		if !ValidName(c.Name) {
			return errkind.New(errkind.Invalid, "cores[%d].name %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and - (no ':' and no non-ASCII characters)", i, c.Name)
		}
		if j, dup := seen[c.Name]; dup {
			return errkind.New(errkind.Invalid, "cores[%d].name %q repeats cores[%d]: name each core once per task", i, c.Name, j)
		}
		seen[c.Name] = i
		if c.ProvisioningTemplate == "" {
			return errkind.New(errkind.Invalid, "cores[%d].provisioningTemplate is required (also for Delete, where any placeholder will do)", i)
		}
	}
	return nil
}

// Submit validates a core task, creates the records of cores not yet known
// (existing cores keep their template state) and queues the task. It
// returns the new task id.
func (s *Service) Submit(ctx context.Context, t cdf.NewCoreTask) (string, error) {
	if err := Validate(t); err != nil {
		return "", err
	}
	now := s.cfg.Now()
	names := make([]string, len(t.Cores))
	for i, c := range t.Cores {
		names[i] = c.Name
	}
	if err := s.cfg.Store.EnsureCores(ctx, names, now); err != nil {
		return "", fmt.Errorf("record cores: %w", err)
	}
	req := taskRequest{CoreVersion: t.CoreVersion}
	size := CreateBatchSize
	if t.Type == cdf.TaskDelete {
		req.Options = t.Options
		size = DeleteBatchSize
	}
	id, err := tasks.Submit(ctx, s.cfg.Tasks, tasks.Task{Kind: tasks.KindCore, Type: t.Type}, req, t.Cores,
		func(c cdf.NewCore) string { return c.Name }, size, now)
	if err != nil {
		return "", err
	}
	s.log.Info("core task submitted", "task", id, "type", t.Type, "cores", len(t.Cores))
	return id, nil
}

func (s *Service) emit(ctx context.Context, detailType string, detail any) {
	if s.cfg.Events != nil {
		s.cfg.Events(ctx, detailType, detail)
	}
}

// CoreEvent is the detail of Core Created Event and Core Deleted Event (spec §9).
type CoreEvent struct {
	CoreName string `json:"coreName"`
	Status   string `json:"status"` // success | failed
	TaskID   string `json:"taskId"`
	Message  string `json:"message,omitempty"`
}

// EventKey names the task item the event is about, so an item re-run after
// a crash publishes its event once (events.Keyed).
func (e CoreEvent) EventKey() string {
	if e.TaskID == "" {
		return ""
	}
	return e.TaskID + "/" + e.CoreName
}

// Event detail-types emitted by core tasks.
const (
	EventCoreCreated = "Core Created Event"
	EventCoreDeleted = "Core Deleted Event"
)
