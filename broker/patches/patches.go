// Package patches is the broker side of device patching
// (spec/device-patcher.md §1, §2 and §6 with ggfleet's adjustments): patch
// templates with every version kept, target profiles of client devices,
// patch tasks that patch many devices, and the dispatch of each patch as a
// job to the ggagent on the device's core, whose events, step results and
// logs come back over MQTT.
//
// Everything the dispatcher needs lives in the database: a patch waits for a
// slot (dispatched_at = 0), is marked dispatched before its job is
// published, and moves on only through compare-and-swap updates. Tick can
// therefore run after a broker restart and continue where the last broker
// stopped; Run calls it periodically.
//
// Files bigger than InlineLimit and uploaded artifacts are not put into the
// job (MQTT payloads are bounded): they are stored content-addressed in the
// artifact store, and the job carries an expiring URL signed with an HMAC
// key only the broker knows (GET /patchBlobs/{sha256}?expires=&signature=).
// An expiring signed URL was chosen over the agent's mTLS identity because
// the broker's HTTP API does not ask for client certificates, and because
// a pull-transfer file is fetched by the client device itself, which has
// no identity at all; the agent checks the SHA-256 the job carries.
//
// Secrets never reach the broker: a target names credentials the core
// keeps (patchmsg.Target, credentialRef).
package patches

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// Status messages a patch ends with when the broker, not the agent,
// decides its outcome (§6.2, §6.5 and the additions).
const (
	MsgQueued             = "AGENT:Queued"
	MsgInProgress         = "AGENT:InProgress"
	MsgSuccess            = "AGENT:Success"
	MsgFailed             = "AGENT:Failed"
	MsgCancelled          = "AGENT:Cancelled"
	MsgNoAck              = "AGENT:NoAck"
	MsgLost               = "AGENT:Lost"
	MsgDeadline           = "AGENT:Deadline"
	MsgNotStarted         = "AGENT:NotStarted:MaxFailures"
	MsgTemplateDisabled   = "TEMPLATE_DISABLED"
	MsgTemplateNotFound   = "TEMPLATE_NOT_FOUND"
	MsgActivationNotFound = "DEVICE_ACTIVATION_NOT_FOUND"
	MsgArtifactNotFound   = "ARTIFACT_NOT_FOUND"
)

// Defaults and limits.
const (
	DefaultMaxConcurrency  = 10
	DefaultDispatchTimeout = 24 * time.Hour
	DefaultTickInterval    = 2 * time.Second
	// HeartbeatInterval is how often a running agent sends a heartbeat;
	// a running patch is lost after 3 of them pass without any event (and
	// its deadline passed).
	HeartbeatInterval = 30 * time.Second
	// InlineLimit is the largest inline file a job carries; bigger ones go
	// by URL (AWS IoT Core caps payloads at 128 KB).
	InlineLimit = 32 << 10
	// LogLimit bounds the stored log of one step's stream per attempt; the
	// tail is kept.
	LogLimit = 1 << 20
	// MaxPatchesPerTask bounds one POST /patchTasks.
	MaxPatchesPerTask = 1000
	// busyDelay is how long a patch the agent rejected as BUSY waits before
	// it is dispatched again.
	busyDelay = 30 * time.Second
	// urlSlack is added to a job's deadline for the expiry of its URLs.
	urlSlack = time.Hour
)

// Template is a patch template version: the CDF fields plus the v2
// defaults, files and steps (§6.3).
type Template struct {
	Name                 string              `json:"name"`
	Description          string              `json:"description,omitempty"`
	PatchType            string              `json:"patchType"`
	Enabled              bool                `json:"enabled"`
	PlaybookName         string              `json:"playbookName,omitempty"`
	PlaybookFileContents string              `json:"playbookFileContents,omitempty"`
	PlaybookSource       *PlaybookSource     `json:"playbookSource,omitempty"`
	ExtraVars            map[string]string   `json:"extraVars,omitempty"`
	Options              []string            `json:"options,omitempty"`
	Defaults             *patchmsg.Defaults  `json:"defaults,omitempty"`
	Files                []patchmsg.FileSpec `json:"files,omitempty"`
	Steps                []patchmsg.StepSpec `json:"steps,omitempty"`
	VarsEncoding         string              `json:"varsEncoding,omitempty"`
	VersionNo            int                 `json:"versionNo"`
	CreatedAt            cdf.Time            `json:"createdAt"`
	UpdatedAt            cdf.Time            `json:"updatedAt"`
}

// PlaybookSource says where a CDF-mode template's playbook is stored.
type PlaybookSource struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
}

// TemplateInput is the body of POST and PATCH /patchTemplates: pointers
// tell "absent" from "empty" for PATCH.
type TemplateInput struct {
	Name                 string              `json:"name"`
	Description          *string             `json:"description"`
	PatchType            *string             `json:"patchType"`
	Enabled              *bool               `json:"enabled"`
	PlaybookName         *string             `json:"playbookName"`
	PlaybookFileContents *string             `json:"playbookFileContents"`
	ExtraVars            map[string]string   `json:"extraVars"`
	Options              []string            `json:"options"`
	Defaults             *patchmsg.Defaults  `json:"defaults"`
	Files                []patchmsg.FileSpec `json:"files"`
	Steps                []patchmsg.StepSpec `json:"steps"`
	VarsEncoding         *string             `json:"varsEncoding"`
}

// Artifact is a blob uploaded for a template's artifact file source.
type Artifact struct {
	TemplateName string   `json:"templateName"`
	Name         string   `json:"artifact"`
	SHA256       string   `json:"sha256"`
	Bytes        int64    `json:"bytes"`
	UpdatedAt    cdf.Time `json:"updatedAt"`
}

// Target is a stored target profile with its last probe.
type Target struct {
	patchmsg.Target
	LastProbe *Probe   `json:"lastProbe,omitempty"`
	CreatedAt cdf.Time `json:"createdAt"`
	UpdatedAt cdf.Time `json:"updatedAt"`
}

// Probe is a probe request and, once the core answered, its result.
type Probe struct {
	ProbeID            string    `json:"probeId"`
	Status             string    `json:"status"` // requested | ok | failed
	RequestedAt        cdf.Time  `json:"requestedAt"`
	ReceivedAt         *cdf.Time `json:"receivedAt,omitempty"`
	OK                 bool      `json:"ok"`
	Uname              string    `json:"uname,omitempty"`
	HostKeyFingerprint string    `json:"hostKeyFingerprint,omitempty"`
	Error              string    `json:"error,omitempty"`
}

// TaskOptions are a patch task's options.
type TaskOptions struct {
	// MaxConcurrency bounds the patches of the task running at once
	// (default 10).
	MaxConcurrency int `json:"maxConcurrency"`
	// MaxFailures stops the task after that many failed patches (0: never);
	// patches not started then fail with AGENT:NotStarted:MaxFailures.
	MaxFailures int `json:"maxFailures"`
	// DeadlineSeconds fails the task's unfinished patches with
	// AGENT:Deadline that long after the task was created (0: none).
	DeadlineSeconds int `json:"deadlineSeconds"`
}

// Task is a patch task (CDF: only an id and timestamps; ggfleet adds its
// options and a summary of its patches).
type Task struct {
	TaskID    string         `json:"taskId"`
	Status    string         `json:"status,omitempty"` // inProgress | success | failed
	Counts    map[string]int `json:"patchStatusCounts,omitempty"`
	Options   TaskOptions    `json:"options"`
	Deadline  time.Time      `json:"-"`
	CreatedAt cdf.Time       `json:"createdAt"`
	UpdatedAt cdf.Time       `json:"updatedAt"`
}

// Task statuses (ggfleet addition).
const (
	TaskInProgress = "inProgress"
	TaskSuccess    = "success"
	TaskFailed     = "failed"
)

// NewPatch is one patch of POST /patchTasks.
type NewPatch struct {
	DeviceID          string            `json:"deviceId"`
	PatchTemplateName string            `json:"patchTemplateName"`
	PatchType         string            `json:"patchType"`
	ExtraVars         map[string]string `json:"extraVars"`
}

// NewTask is the body of POST /patchTasks. The options may also be given
// at the top level.
type NewTask struct {
	Patches         []NewPatch   `json:"patches"`
	Options         *TaskOptions `json:"options"`
	MaxConcurrency  *int         `json:"maxConcurrency"`
	MaxFailures     *int         `json:"maxFailures"`
	DeadlineSeconds *int         `json:"deadlineSeconds"`
}

// LogInfo says whether a patch has stored logs.
type LogInfo struct {
	Available bool  `json:"available"`
	Bytes     int64 `json:"bytes"`
}

// Patch is one patch (one device of one task), as the API shows it plus
// the dispatcher's bookkeeping.
type Patch struct {
	PatchID              string                `json:"patchId"`
	TaskID               string                `json:"taskId"`
	DeviceID             string                `json:"deviceId"`
	PatchTemplateName    string                `json:"patchTemplateName"`
	PatchTemplateVersion int                   `json:"patchTemplateVersion,omitempty"`
	PatchType            string                `json:"patchType"`
	PatchStatus          string                `json:"patchStatus"`
	StatusMessage        string                `json:"statusMessage,omitempty"`
	ExtraVars            map[string]string     `json:"extraVars,omitempty"`
	AssociationID        *string               `json:"associationId"`
	CoreName             string                `json:"coreName,omitempty"`
	Attempt              int                   `json:"attempt"`
	Steps                []patchmsg.StepResult `json:"steps,omitempty"`
	Logs                 *LogInfo              `json:"logs,omitempty"`
	CreatedAt            cdf.Time              `json:"createdAt"`
	UpdatedAt            cdf.Time              `json:"updatedAt"`

	// DispatchedAt is when the current attempt's job was first published
	// (zero: waiting for a slot).
	DispatchedAt time.Time `json:"-"`
	// NotBefore delays the next dispatch.
	NotBefore time.Time `json:"-"`
	// LastEventAt is when the agent last reported on the attempt.
	LastEventAt time.Time `json:"-"`
	// Deadline is the job's deadline.
	Deadline time.Time `json:"-"`
	// Seq is one more than the last applied event's sequence number:
	// events below it were applied already (the first may be 0 or 1).
	Seq int64 `json:"-"`
	// Rev is the row's revision for compare-and-swap updates.
	Rev int64 `json:"-"`
}

// Final reports whether the patch has an outcome.
func (p Patch) Final() bool {
	return p.PatchStatus == patchmsg.PatchSuccess || p.PatchStatus == patchmsg.PatchFailed
}

// waiting reports whether the patch waits for a dispatch slot.
func (p Patch) waiting() bool { return !p.Final() && p.DispatchedAt.IsZero() }

// active reports whether the patch holds a dispatch slot.
func (p Patch) active() bool { return !p.Final() && !p.DispatchedAt.IsZero() }

// LogChunk is a stored piece of log.
type LogChunk struct {
	PatchID    string
	Attempt    int
	Step       string
	Stream     string
	Seq        int64
	Data       string
	ReceivedAt time.Time
}

// Store is the persistence the service needs (sqlstore.DB implements it).
// Missing rows are errkind.NotFound; UpdatePatch answers errkind.Conflict
// when the row's revision is no longer p.Rev.
type Store interface {
	CreatePatchTemplate(ctx context.Context, t Template) error
	AddPatchTemplateVersion(ctx context.Context, t Template) error
	GetPatchTemplate(ctx context.Context, name string, versionNo int) (Template, error)
	ListPatchTemplates(ctx context.Context, count int, after string) ([]Template, bool, error)
	DeletePatchTemplate(ctx context.Context, name string) error
	PutPatchArtifact(ctx context.Context, a Artifact) error
	GetPatchArtifact(ctx context.Context, template, name string) (Artifact, error)

	PutPatchTarget(ctx context.Context, t Target) error
	GetPatchTarget(ctx context.Context, deviceID string) (Target, error)
	ListPatchTargets(ctx context.Context, core string, count int, after string) ([]Target, bool, error)
	DeletePatchTarget(ctx context.Context, deviceID string) error
	SetPatchTargetProbe(ctx context.Context, deviceID string, p Probe) error

	CreatePatchTask(ctx context.Context, t Task, patches []Patch) error
	GetPatchTask(ctx context.Context, id string) (Task, error)
	CountTaskPatches(ctx context.Context, taskID string) (map[string]int, error)
	ListTaskPatches(ctx context.Context, taskID string, count int, after string) ([]Patch, string, error)
	ListDevicePatches(ctx context.Context, deviceID, status string, count int, after string) ([]Patch, string, error)
	GetPatch(ctx context.Context, id string) (Patch, error)
	UpdatePatch(ctx context.Context, p Patch) (Patch, error)
	DeletePatch(ctx context.Context, id string) error
	OpenPatches(ctx context.Context) ([]Patch, error)
	OpenCorePatches(ctx context.Context, core string) ([]Patch, error)

	AppendPatchLog(ctx context.Context, c LogChunk, limit int64) error
	PatchLogs(ctx context.Context, patchID string, attempt int, step, stream string) ([]byte, error)
	PatchLogBytes(ctx context.Context, patchID string, attempt int) (int64, error)
}

// Publisher sends a message to one core on ggfleet/things/{thing}/{suffix}
// (the MQTT bus implements it).
type Publisher interface {
	Publish(ctx context.Context, thing, suffix string, payload []byte, retained bool) error
}

// Blobs stores and reads artifact bytes by key (the provider's artifact
// store implements it).
type Blobs interface {
	PutArtifact(ctx context.Context, key, contentType string, data []byte) (string, error)
	GetArtifact(ctx context.Context, key string) ([]byte, string, error)
}

// Config holds the service's dependencies.
type Config struct {
	Store     Store
	Publisher Publisher // nil: jobs are stored but not sent
	Blobs     Blobs
	// Presigner, when set (aws mode), signs the URLs of
	// ${aws:s3:presign:...} variables; without it they are signed
	// /patchBlobs URLs of Blobs.
	Presigner Presigner
	// URLKey signs blob URLs (at least 32 random bytes, stable across
	// restarts so URLs of dispatched jobs stay valid).
	URLKey []byte
	// BaseURL is how agents reach the broker's HTTP API.
	BaseURL string
	// DispatchTimeout fails a dispatched patch no agent accepted
	// (default 24h).
	DispatchTimeout time.Duration
	// TickInterval is how often Run dispatches and sweeps (default 2s).
	TickInterval time.Duration
	Logger       *slog.Logger
	Now          func() time.Time
}

// Service is the patching service.
type Service struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	kick chan struct{}

	// resentAt rate-limits re-sends to quiet running patches (Tick). It is
	// only a limiter: losing it with the process costs one early re-send.
	resentMu sync.Mutex
	resentAt map[string]time.Time
}

// New builds the service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DispatchTimeout <= 0 {
		cfg.DispatchTimeout = DefaultDispatchTimeout
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = DefaultTickInterval
	}
	return &Service{cfg: cfg, log: cfg.Logger.With("component", "patches"), now: cfg.Now, kick: make(chan struct{}, 1), resentAt: map[string]time.Time{}}
}

// wake asks Run for a tick soon (after a submit, retry or completion).
func (s *Service) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
