// Package tasks is the durable, batched task engine shared by core, device and
// (later) deployment tasks: the CDF lifecycle Waiting → InProgress →
// Success|Failure, per-item status, sticky failure, and batches that a job
// queue runs at least once. Domain packages plug in a Processor; the store
// and the queue are edges.
package tasks

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"time"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

// Kind is what a task works on.
type Kind string

// The task kinds.
const (
	KindCore       Kind = "core"
	KindDevice     Kind = "device"
	KindDeployment Kind = "deployment"
)

// Task is one task as stored. Request holds the kind-specific task body
// (for example coreVersion and options) as JSON.
type Task struct {
	ID              string
	Kind            Kind
	Type            string // Create | Delete for core and device tasks
	CoreName        string // device tasks: the core the devices belong to
	Status          string
	StatusMessage   string
	CreatedAt       time.Time
	UpdatedAt       time.Time // zero until the task first changes (null on the wire)
	Request         json.RawMessage
	BatchesTotal    int
	BatchesComplete int
}

// Item is one core, device or deployment target of a task. Input is the
// item's request (for example a cdf.NewCore) as JSON; Progress is the
// processor's resume state, saved before each side effect.
type Item struct {
	TaskID        string
	Name          string
	Seq           int // position in the request; lists keep request order
	Batch         int
	Status        string
	StatusMessage string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Input         json.RawMessage
	Progress      json.RawMessage
}

// Final reports whether the item has reached Success or Failure.
func (it *Item) Final() bool {
	return it.Status == cdf.StatusSuccess || it.Status == cdf.StatusFailure
}

// BatchRef names one batch of one task: the unit the job queue runs.
type BatchRef struct {
	TaskID string `json:"taskId"`
	Batch  int    `json:"batch"`
}

// Store persists tasks and their items. CreateTask must also enqueue one job
// per batch in the same transaction, so a task never exists without the work
// that finishes it. CompleteBatch must be idempotent per (task, batch).
type Store interface {
	CreateTask(ctx context.Context, t Task, items []Item) error
	GetTask(ctx context.Context, id string) (Task, error)
	// ListTasks returns up to count tasks of a kind in id order after the
	// cursor, and whether more exist.
	ListTasks(ctx context.Context, kind Kind, count int, after string) ([]Task, bool, error)
	ListItems(ctx context.Context, taskID string) ([]Item, error)
	// ListItemStates is ListItems without each item's Input and Progress:
	// what a task's view shows, without reading the progress (which may
	// hold a planned private key) of thousands of items.
	ListItemStates(ctx context.Context, taskID string) ([]Item, error)
	ListBatchItems(ctx context.Context, taskID string, batch int) ([]Item, error)
	UpdateItem(ctx context.Context, it Item) error
	// StartTask moves a Waiting task to InProgress; other states are left alone.
	StartTask(ctx context.Context, id string, now time.Time) error
	// CompleteBatch records a batch as done (once), makes the task Failure
	// when failed (sticky; message kept only if none was set), and Success
	// when every batch is done and it is not Failure. It returns the task.
	CompleteBatch(ctx context.Context, id string, batch int, failed bool, message string, now time.Time) (Task, error)
}

// NewID returns a 9-character task id from CDF's alphabet [0-9a-zA-Z_-].
// The first character is always a letter or digit so an id never reads as a
// flag when an operator pastes it on a command line ("ggfleet tasks watch -4P…").
func NewID() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-"
	var b [9]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens on supported platforms
	}
	const alnum = len(alphabet) - 2 // without '_' and '-'
	b[0] = alphabet[int(b[0])%alnum]
	for i := 1; i < len(b); i++ {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// Batches assigns items to batches of at most size items each and returns
// the number of batches.
func Batches(items []Item, size int) int {
	if size < 1 {
		size = 1
	}
	for i := range items {
		items[i].Seq = i
		items[i].Batch = i / size
	}
	return (len(items) + size - 1) / size
}
