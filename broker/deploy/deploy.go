// Package deploy runs deployment tasks (CDF §2.5, §4.4, §5 with ggfleet's
// corrections): a task names a template version and targets; a first stage
// expands the targets into cores; each core gets the desired template, the
// per-version thing group and a desired deployment document that agents
// receive as a retained MQTT message. A core's item then waits for the
// agent's report (HandleStatus) or its deadline (Run), durably: the waits
// live in the database, so a broker restart loses nothing.
package deploy

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/groupcommit"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// GroupPrefix starts the name of every per-template-version deployment
// thing group (spec §5.1); a core is in at most one such group.
const GroupPrefix = "cdf_ggv2_deploymentForTemplate_"

// GroupName is the thing group of a template version.
func GroupName(template string, version int) string {
	return fmt.Sprintf("%s%s_%d", GroupPrefix, template, version)
}

// Defaults and limits.
const (
	// BatchSize is the spec's DEPLOYMENTS_BATCH_SIZE, kept: batchesTotal is
	// on the wire, and since ProcessBatch works a batch in a few statements
	// a larger batch would save little (measured: the time left is the
	// agents' reports, one event commit each, not the batches).
	BatchSize            = 50
	DefaultTimeout       = 10 * time.Minute
	DefaultSweepInterval = 5 * time.Second

	// finishGroupMax bounds the outcomes applied in one transaction.
	finishGroupMax = 256
)

// Event detail-types this package emits (spec §9).
const (
	EventDeploymentTaskCreated = "DeploymentTask Created Event"
	EventCoreTemplateUpdated   = "Core Template Updated Event"
)

// Item status messages (spec §4.5, and ggfleet's own).
const (
	MsgNotRegistered    = "Core device not registered with Greengrass V2"
	MsgTemplateNotFound = "Template not found"
	MsgNoAssetLibrary   = "Asset Library targets need the broker to be started with --asset-library-url"
)

// DeploymentTaskCreatedEvent is the detail of EventDeploymentTaskCreated.
type DeploymentTaskCreatedEvent struct {
	TaskID   string `json:"taskId"`
	CoreName string `json:"coreName"`
	Status   string `json:"status"` // success | failed
	Message  string `json:"message,omitempty"`
}

// EventKey names the task item the event is about, so an item re-run after
// a crash publishes its event once (events.Keyed).
func (e DeploymentTaskCreatedEvent) EventKey() string {
	if e.TaskID == "" {
		return ""
	}
	return e.TaskID + "/" + e.CoreName
}

// CoreTemplateUpdatedEvent is the detail of EventCoreTemplateUpdated.
type CoreTemplateUpdatedEvent struct {
	CoreName         string `json:"coreName"`
	DeploymentTaskID string `json:"deploymentTaskId"`
	DeploymentID     string `json:"deploymentId,omitempty"`
	JobID            string `json:"jobId"`
	TemplateName     string `json:"templateName"`
	TemplateVersion  int    `json:"templateVersion"`
	Status           string `json:"status"` // success | failed
}

// EventKey names the deployment outcome the event is about (one per core,
// deployment task and deployment), so it is published once (events.Keyed).
func (e CoreTemplateUpdatedEvent) EventKey() string {
	if e.DeploymentTaskID == "" {
		return ""
	}
	return e.DeploymentTaskID + "/" + e.CoreName + "/" + e.DeploymentID
}

// Templates resolves template versions (broker/templates.Service).
type Templates interface {
	Version(ctx context.Context, name string, v int) (cdf.Template, error)
	Latest(ctx context.Context, name string) (int, error)
}

// Publisher sends a message to one core over MQTT, on
// ggfleet/things/{thing}/{suffix} (the MQTT bus implements it).
type Publisher interface {
	Publish(ctx context.Context, thing, suffix string, payload []byte, retained bool) error
}

// AssetLibrary resolves CDF Asset Library targets to thing names.
type AssetLibrary interface {
	DeviceThings(ctx context.Context, ids []string) ([]string, error)
	GroupThings(ctx context.Context, paths []string) ([]string, error)
	QueryThings(ctx context.Context, query json.RawMessage) ([]string, error)
}

// GroupLister is implemented by providers that can list a thing's groups
// (the local provider); others fall back to the group of the core's
// previous deployment document.
type GroupLister interface {
	ListThingGroupsForThing(ctx context.Context, thing string) ([]string, error)
}

// Config holds the service's dependencies.
type Config struct {
	Tasks        tasks.Store // the task store (sqlstore.DB)
	Store        Store       // deployment state (sqlstore.DB)
	Cores        Cores       // core template state (sqlstore.DB.Cores())
	Templates    Templates
	Provider     provider.Provider
	Publisher    Publisher    // nil: documents are only stored
	AssetLibrary AssetLibrary // nil: Asset Library targets are refused
	// Events receives the spec §9 events; may be nil.
	Events func(ctx context.Context, detailType string, detail any)
	// EventsAll receives many events of one type at once (a batch's
	// DeploymentTask Created events, stored in one transaction:
	// events.Service.PublishAll); nil sends them to Events one by one.
	EventsAll func(ctx context.Context, detailType string, details []any)
	// CoreView returns a core with its live device block
	// (cores.Service.GetCore), for plans; may be nil (plans then know no
	// reported templates and no connectivity).
	CoreView func(ctx context.Context, name string) (cdf.Core, error)
	// DeploymentTimeout is how long a registered core has to report (default 10m).
	DeploymentTimeout time.Duration
	// SweepInterval is how often Run looks for overdue items (default 5s).
	SweepInterval time.Duration
	Logger        *slog.Logger
	Now           func() time.Time
}

// Service runs deployment tasks. It is the tasks.Processor (and
// tasks.Expander) of tasks.KindDeployment.
type Service struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	runner *tasks.Runner // completes batches whose awaited items finished
	// finishes groups concurrent outcomes into one FinishMany when the
	// store has it (nil: Store.Finish per outcome).
	finishes *groupcommit.Group[Outcome, Finished]
}

var (
	_ tasks.Processor = (*Service)(nil)
	_ tasks.Expander  = (*Service)(nil)
)

// New builds the service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DeploymentTimeout <= 0 {
		cfg.DeploymentTimeout = DefaultTimeout
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	s := &Service{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if bf, ok := cfg.Store.(BatchFinisher); ok {
		s.finishes = groupcommit.New(bf.FinishMany, finishGroupMax)
	}
	s.runner = &tasks.Runner{
		Store:      cfg.Tasks,
		Processors: map[tasks.Kind]tasks.Processor{tasks.KindDeployment: s},
		Logger:     cfg.Logger,
		Now:        cfg.Now,
	}
	return s
}

// request is a deployment task's stored body.
type request struct {
	Template     cdf.TemplateRef       `json:"template"`
	Targets      cdf.DeploymentTargets `json:"targets"`
	IotJobConfig json.RawMessage       `json:"iotJobConfig,omitempty"`
	// DeploymentID is the one deployment of this task's template version.
	DeploymentID string `json:"deploymentId"`
}

func decodeRequest(t tasks.Task) (request, error) {
	var req request
	if err := json.Unmarshal(t.Request, &req); err != nil {
		return req, fmt.Errorf("task %s: stored request: %w", t.ID, err)
	}
	return req, nil
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

func checkNames(field string, names []string) error {
	for i, n := range names {
		if !nameRE.MatchString(n) {
			return errkind.New(errkind.Invalid, "targets.%s[%d] %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and -", field, i, n)
		}
	}
	return nil
}

// Submit validates a deployment task, resolves its template version and
// stores it with the job that expands its targets. It returns the task id.
func (s *Service) Submit(ctx context.Context, in cdf.NewDeploymentTask) (string, error) {
	version, err := s.check(ctx, in)
	if err != nil {
		return "", err
	}
	req := request{
		Template:     cdf.TemplateRef{Name: in.Template.Name, Version: version},
		Targets:      in.Targets,
		DeploymentID: newDeploymentID(),
	}
	if len(in.IotJobConfig) > 0 && string(in.IotJobConfig) != "null" {
		req.IotJobConfig = in.IotJobConfig
	}
	body, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("encode deployment task: %w", err)
	}
	t := tasks.Task{
		ID:        tasks.NewID(),
		Kind:      tasks.KindDeployment,
		Status:    cdf.StatusWaiting,
		CreatedAt: s.now(),
		Request:   body,
	}
	es, ok := s.cfg.Tasks.(tasks.ExpandStore)
	if !ok {
		return "", fmt.Errorf("deployment tasks: the task store %T cannot run two-stage tasks", s.cfg.Tasks)
	}
	if err := es.CreateExpandingTask(ctx, t); err != nil {
		return "", fmt.Errorf("create deployment task: %w", err)
	}
	s.log.Info("deployment task submitted", "task", t.ID, "template", req.Template.Name, "version", version, "deploymentId", req.DeploymentID)
	return t.ID, nil
}

// check validates a new deployment task and resolves its template version
// (the latest when none is given); Submit and Plan share it.
func (s *Service) check(ctx context.Context, in cdf.NewDeploymentTask) (int, error) {
	if in.Template.Name == "" {
		return 0, errkind.New(errkind.Invalid, "template.name is required: name the component template to deploy")
	}
	if in.Targets.Empty() {
		return 0, errkind.New(errkind.Invalid, "targets must name at least one of thingNames, thingGroupNames, assetLibraryDeviceIds, assetLibraryGroupPaths or assetLibraryQuery")
	}
	if err := checkNames("thingNames", in.Targets.ThingNames); err != nil {
		return 0, err
	}
	if err := checkNames("thingGroupNames", in.Targets.ThingGroupNames); err != nil {
		return 0, err
	}
	if usesAssetLibrary(in.Targets) && s.cfg.AssetLibrary == nil {
		return 0, errkind.New(errkind.Invalid, "%s", MsgNoAssetLibrary)
	}
	if q := in.Targets.AssetLibraryQuery; len(q) > 0 && string(q) != "null" && q[0] != '{' {
		return 0, errkind.New(errkind.Invalid, "targets.assetLibraryQuery must be an Asset Library search request object")
	}
	if _, err := templates.ParseJobConfig("iotJobConfig", in.IotJobConfig); err != nil {
		return 0, err
	}
	version := int(in.Template.Version)
	if version == 0 {
		v, err := s.cfg.Templates.Latest(ctx, in.Template.Name)
		if errkind.Is(err, errkind.NotFound) {
			return 0, errkind.Wrap(errkind.NotFound, err, "template %s not found: create it with POST /templates first", in.Template.Name)
		}
		if err != nil {
			return 0, fmt.Errorf("resolve template %q: %w", in.Template.Name, err)
		}
		version = v
	} else {
		_, err := s.cfg.Templates.Version(ctx, in.Template.Name, version)
		if errkind.Is(err, errkind.NotFound) {
			return 0, errkind.Wrap(errkind.NotFound, err, "template %s version %d not found", in.Template.Name, version)
		}
		if err != nil {
			return 0, fmt.Errorf("resolve template %q version %d: %w", in.Template.Name, version, err)
		}
	}
	return version, nil
}

func usesAssetLibrary(t cdf.DeploymentTargets) bool {
	q := string(t.AssetLibraryQuery)
	return len(t.AssetLibraryDeviceIDs) > 0 || len(t.AssetLibraryGroupPaths) > 0 || (q != "" && q != "null")
}

// newDeploymentID returns a random UUID (version 4), the form Greengrass
// deployment ids take.
func newDeploymentID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens on supported platforms
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// emitAll sends many events of one type, together when EventsAll is set.
func (s *Service) emitAll(ctx context.Context, detailType string, details []any) {
	if s.cfg.EventsAll != nil {
		s.cfg.EventsAll(ctx, detailType, details)
		return
	}
	for _, d := range details {
		s.emit(ctx, detailType, d)
	}
}

func (s *Service) emit(ctx context.Context, detailType string, detail any) {
	if s.cfg.Events != nil {
		s.cfg.Events(ctx, detailType, detail)
	}
}
