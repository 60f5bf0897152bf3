package deploy

import (
	"context"
	"time"

	"github.com/ggfleet/ggfleet/broker/tasks"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Document is a core's desired deployment document: the retained
// deployments message, kept in the database because retained MQTT state is
// not trusted across restarts.
type Document struct {
	Core            string
	TaskID          string
	DeploymentID    string
	TemplateName    string
	TemplateVersion int
	Payload         []byte // the mqttmsg.DeploymentMsg as JSON
	UpdatedAt       time.Time
}

// Wait is a deployment item that waits for its core's report.
type Wait struct {
	TaskID       string
	Core         string
	Batch        int
	DeploymentID string
	Deadline     time.Time
}

// Outcome finishes a waiting deployment item.
type Outcome struct {
	TaskID       string
	Core         string
	DeploymentID string
	// Status (Success | Failure) and Message are the item's.
	Status  string
	Message string
	// CoreStatus is the core's new deploymentStatus and CoreMessage its
	// deploymentStatusMessage; Reported, when set, becomes the core's
	// reported template. They are applied only when the item changes and
	// the core's stored document is still DeploymentID (a superseded
	// deployment never touches the core). CoreStatus "" leaves the core alone.
	CoreStatus  string
	CoreMessage string
	Reported    *cdf.TemplateRef
	Now         time.Time
}

// Finished is what Store.Finish did.
type Finished struct {
	Changed   bool // the item became final now
	Batch     int  // the item's batch
	BatchDone bool // every item of the batch is final (seen after the commit)
}

// BatchFinisher is implemented by stores that apply many outcomes in one
// transaction (sqlstore). The service then groups the outcomes of reports
// that arrive together (groupcommit) instead of a transaction per report:
// a deployment to 1,000 cores gets 1,000 reports within about a second.
type BatchFinisher interface {
	// FinishMany is Finish for each of outs, in order, in one transaction.
	// Of outcomes that complete one batch together, the last that changed
	// its item has BatchDone.
	FinishMany(ctx context.Context, outs []Outcome) ([]Finished, error)
}

// CoreDeployment is one deployment item of a core, with its task's times.
type CoreDeployment struct {
	Item          tasks.Item
	TaskCreatedAt time.Time
	TaskUpdatedAt time.Time
}

// Store persists deployment state (sqlstore.DB implements it).
type Store interface {
	tasks.ExpandStore

	// PutDocument stores a core's desired document, replacing the previous
	// one, which it returns (found false when there was none).
	PutDocument(ctx context.Context, d Document) (prev Document, found bool, err error)
	// GetDocument returns a core's document or errkind.NotFound.
	GetDocument(ctx context.Context, core string) (Document, error)
	// ListDocuments returns up to count documents in core order after the cursor.
	ListDocuments(ctx context.Context, after string, count int) ([]Document, error)

	// PutWait records a waiting item; an existing wait keeps its deadline.
	PutWait(ctx context.Context, w Wait) error
	// WaitsForCore returns the waits of a core.
	WaitsForCore(ctx context.Context, core string) ([]Wait, error)
	// OverdueWaits returns up to limit waits whose deadline is not after now.
	OverdueWaits(ctx context.Context, now time.Time, limit int) ([]Wait, error)
	// PutDeployments starts the deployments of many cores in one
	// transaction: every wait first (an existing wait keeps its deadline),
	// then every document, replacing the previous ones, which it returns
	// by core (a core without one is absent).
	PutDeployments(ctx context.Context, waits []Wait, docs []Document) (prev map[string]Document, err error)
	// WaitsForCores returns the waits of the given cores.
	WaitsForCores(ctx context.Context, cores []string) ([]Wait, error)

	// Finish applies an outcome in one transaction: the item becomes final
	// only if it is not final yet (a conditional update, so replicas and
	// duplicate reports finish it once), the wait is removed, and the core
	// state is applied as Outcome says. It reports whether the item
	// changed, its batch, and whether every item of that batch is now final
	// (counted after the commit, so of outcomes that finish a batch's last
	// items at once at least one sees it done). An error after the commit
	// leaves the item final: the sweeper's PendingBatches completes it.
	Finish(ctx context.Context, o Outcome) (Finished, error)
	// PendingBatches returns batches of unfinished deployment tasks whose
	// items are all final but that were not completed (a crash between
	// Finish and completing the batch).
	PendingBatches(ctx context.Context) ([]tasks.BatchRef, error)

	// ListTaskItems returns up to count items of a task in name order after
	// the cursor, and whether more exist.
	ListTaskItems(ctx context.Context, taskID string, count int, after string) ([]tasks.Item, bool, error)
	// GetTaskItem returns one item of a task or errkind.NotFound.
	GetTaskItem(ctx context.Context, taskID, name string) (tasks.Item, error)
	// ListCoreDeployments returns up to count deployment items of a core in
	// task id order after the cursor, and whether more exist.
	ListCoreDeployments(ctx context.Context, core string, count int, after string) ([]CoreDeployment, bool, error)
}

// Cores writes the template state of core records (sqlstore.CoreStore).
type Cores interface {
	// EnsureCores inserts default records for names without one.
	EnsureCores(ctx context.Context, names []string, now time.Time) error
	// SetDesiredTemplate sets a core's desired template and its
	// deploymentStatus, and clears deploymentStatusMessage.
	SetDesiredTemplate(ctx context.Context, core, name string, version int, status string, now time.Time) error
	// SetDesiredTemplates is SetDesiredTemplate for many cores in one
	// statement; cores without a record are skipped.
	SetDesiredTemplates(ctx context.Context, cores []string, name string, version int, status string, now time.Time) error
	// SetDeploymentStatus sets a core's deploymentStatus and message.
	SetDeploymentStatus(ctx context.Context, core, status, message string, now time.Time) error
}
