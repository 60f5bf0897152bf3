package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/spf13/pflag"
)

// Task kinds, named after their API collections.
const (
	kindCore       = "coreTasks"
	kindDevice     = "deviceTasks"
	kindDeployment = "deploymentTasks"
)

// pollInterval is how often a waiting command asks for the task.
var pollInterval = 500 * time.Millisecond

// taskItem is one core, device or deployment of a task, whatever its kind.
type taskItem struct {
	Name          string `json:"name"`
	Status        string `json:"taskStatus"`
	StatusMessage string `json:"statusMessage,omitempty"`
}

// taskView is the part of any task the CLI shows and waits on.
type taskView struct {
	ID            string     `json:"id"`
	Kind          string     `json:"kind"`
	Type          string     `json:"type,omitempty"`
	Status        string     `json:"taskStatus"`
	StatusMessage string     `json:"statusMessage,omitempty"`
	Items         []taskItem `json:"items"`
	CreatedAt     cdf.Time   `json:"createdAt"`
	UpdatedAt     cdf.Time   `json:"updatedAt"`
	raw           any        // the broker's own task document, for -o json|yaml
}

// done reports whether the task reached a final status and, for CDF
// tasks, every item did too: CDF makes a task Failure as soon as its first
// batch fails, while later batches may still be running.
func (t taskView) done() bool {
	if t.Status != cdf.StatusSuccess && t.Status != cdf.StatusFailure {
		return false
	}
	if t.Kind == kindPatch {
		return true
	}
	for _, it := range t.Items {
		if it.Status == cdf.StatusWaiting || it.Status == cdf.StatusInProgress {
			return false
		}
	}
	return true
}

// counts tallies the items by status.
type counts struct{ Success, Failure, InProgress, Total int }

func (t taskView) counts() counts {
	var n counts
	for _, it := range t.Items {
		switch it.Status {
		case cdf.StatusSuccess:
			n.Success++
		case cdf.StatusFailure:
			n.Failure++
		default:
			n.InProgress++
		}
	}
	n.Total = len(t.Items)
	return n
}

func (n counts) String() string {
	return fmt.Sprintf("Success %d, Failure %d, InProgress %d", n.Success, n.Failure, n.InProgress)
}

// fetchTask reads task id of kind.
func fetchTask(ctx context.Context, api *apiclient.Client, kind, id string) (taskView, error) {
	path := "/" + kind + "/" + url.PathEscape(id)
	v := taskView{ID: id, Kind: kind}
	switch kind {
	case kindCore:
		var t cdf.CoreTask
		if err := api.Do(ctx, http.MethodGet, path, nil, &t); err != nil {
			return v, err
		}
		v.Type, v.Status, v.StatusMessage, v.CreatedAt, v.UpdatedAt, v.raw = t.Type, t.TaskStatus, t.StatusMessage, t.CreatedAt, t.UpdatedAt, t
		for _, it := range t.Cores {
			v.Items = append(v.Items, taskItem{Name: it.Name, Status: it.TaskStatus, StatusMessage: it.StatusMessage})
		}
	case kindDevice:
		var t cdf.DeviceTask
		if err := api.Do(ctx, http.MethodGet, path, nil, &t); err != nil {
			return v, err
		}
		v.Type, v.Status, v.StatusMessage, v.CreatedAt, v.UpdatedAt, v.raw = t.Type, t.TaskStatus, t.StatusMessage, t.CreatedAt, t.UpdatedAt, t
		for _, it := range t.Devices {
			v.Items = append(v.Items, taskItem{Name: it.Name, Status: it.TaskStatus, StatusMessage: it.StatusMessage})
		}
	case kindDeployment:
		var t cdf.DeploymentTask
		if err := api.Do(ctx, http.MethodGet, path, nil, &t); err != nil {
			return v, err
		}
		v.Type, v.Status, v.StatusMessage, v.CreatedAt, v.UpdatedAt, v.raw = "Deploy", t.TaskStatus, t.StatusMessage, t.CreatedAt, t.UpdatedAt, t
		for _, it := range t.Deployments {
			v.Items = append(v.Items, taskItem{Name: it.CoreName, Status: it.TaskStatus, StatusMessage: it.StatusMessage})
		}
	case kindPatch:
		return fetchPatchTask(&cmdCtx{ctx: ctx, api: api}, id)
	default:
		return v, fmt.Errorf("unknown task kind %q", kind)
	}
	if v.Items == nil {
		v.Items = []taskItem{}
	}
	return v, nil
}

// findTask reads a task of any kind: it tries core, device and deployment
// tasks in turn and returns the first that the broker knows.
func findTask(ctx context.Context, api *apiclient.Client, id string) (taskView, error) {
	for _, kind := range []string{kindCore, kindDeployment, kindDevice, kindPatch} {
		v, err := fetchTask(ctx, api, kind, id)
		if err == nil {
			return v, nil
		}
		if ae, ok := errors.AsType[*apiclient.APIError](err); ok && (ae.Status == http.StatusNotFound || ae.Status == http.StatusBadRequest) {
			continue
		}
		return v, fmt.Errorf("read task %s: %w", id, err)
	}
	return taskView{}, fmt.Errorf("no core, device, deployment or patch task has the id %q", id)
}

// waitTask polls the task until it is done, showing progress on
// c.stdout (a bar on a terminal, one line per change otherwise), then
// prints the outcome. A task that ended in Failure, or with failed items,
// is a *taskFailedError; Ctrl-C is an *interruptedError.
func waitTask(c *cmdCtx, kind, id string) error {
	var last string
	progressOut := c.stdout
	if c.output != "table" {
		progressOut = c.stderr // keep stdout parseable
	}
	bar := newProgress(progressOut, c.tty && c.output == "table")
	for {
		v, err := fetchTask(c.ctx, c.api, kind, id)
		if err != nil {
			if c.ctx.Err() != nil {
				bar.finish()
				return &interruptedError{id: id}
			}
			bar.finish()
			return fmt.Errorf("watch task %s: %w", id, err)
		}
		line := fmt.Sprintf("%s %s", v.Status, v.counts())
		if line != last {
			bar.update(v)
			last = line
		}
		if v.done() {
			bar.finish()
			return reportTask(c, v)
		}
		select {
		case <-c.ctx.Done():
			bar.finish()
			return &interruptedError{id: id}
		case <-time.After(pollInterval):
		}
	}
}

// reportTask prints a finished (or current) task and its items, and
// returns a *taskFailedError when it failed.
func reportTask(c *cmdCtx, v taskView) error {
	out := any(v)
	if v.raw != nil {
		out = v.raw
	}
	if err := emit(c, out, func(w io.Writer) { taskTable(w, v) }); err != nil {
		return err
	}
	n := v.counts()
	if v.Status == cdf.StatusFailure || n.Failure > 0 {
		msg := fmt.Sprintf("ended %s with %d of %d failed", v.Status, n.Failure, n.Total)
		if v.StatusMessage != "" {
			msg += ": " + v.StatusMessage
		}
		return &taskFailedError{id: v.ID, msg: msg}
	}
	return nil
}

func taskTable(w io.Writer, v taskView) {
	fields(w, [][2]string{{"Task", v.ID}, {"Kind", v.Kind}, {"Type", v.Type}, {"Status", v.Status},
		{"Message", v.StatusMessage}, {"Counts", v.counts().String()}})
	fmt.Fprintln(w)
	var rows [][]string
	for _, it := range v.Items {
		msg := it.StatusMessage
		if it.Status == cdf.StatusFailure {
			msg = "(below)"
		}
		rows = append(rows, []string{it.Name, it.Status, msg})
	}
	table(w, []string{"NAME", "STATUS", "MESSAGE"}, rows)
	var failed []string
	for _, it := range v.Items {
		if it.Status == cdf.StatusFailure {
			failed = append(failed, fmt.Sprintf("  %s: %s", it.Name, it.StatusMessage))
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "\nFailures:\n%s\n", strings.Join(failed, "\n"))
	}
}

// progress shows a waiting task: a redrawn bar on a terminal, one plain
// line per change elsewhere (logs, tests).
type progress struct {
	w     io.Writer
	tty   bool
	drawn bool
}

func newProgress(w io.Writer, tty bool) *progress { return &progress{w: w, tty: tty} }

func (p *progress) update(v taskView) {
	n := v.counts()
	if !p.tty {
		fmt.Fprintf(p.w, "task %s: %s — %d/%d done: %s\n", v.ID, v.Status, n.Success+n.Failure, n.Total, n)
		return
	}
	fmt.Fprintf(p.w, "\r\033[K%s %d/%d  %s", bar(n.Success+n.Failure, n.Total, 30), n.Success+n.Failure, n.Total, n)
	p.drawn = true
}

func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// bar draws [####------] for done of total, width cells wide.
func bar(done, total, width int) string {
	filled := 0
	if total > 0 {
		filled = done * width / total
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat("-", width-filled) + "]"
}

// submitted handles a just-created task: with noWait it prints the id,
// else it waits for the outcome.
func submitted(c *cmdCtx, kind, id string, noWait bool) error {
	if noWait {
		return emit(c, map[string]string{"id": id, "kind": kind}, func(w io.Writer) { fmt.Fprintln(w, id) })
	}
	return waitTask(c, kind, id)
}

func taskCommands() []subcommand {
	return []subcommand{
		{name: "tasks show", args: "ID", summary: "Show a core, device, deployment or patch task",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the task ID"); err != nil {
						return err
					}
					v, err := findTask(c.ctx, c.api, args[0])
					if err != nil {
						return err
					}
					return reportTask(c, v)
				}
			}},
		{name: "tasks watch", args: "ID", summary: "Wait for a core, device, deployment or patch task to finish, showing progress",
			setup: func(fs *pflag.FlagSet) runFunc {
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 1, "the task ID"); err != nil {
						return err
					}
					v, err := findTask(c.ctx, c.api, args[0])
					if err != nil {
						return err
					}
					return waitTask(c, v.Kind, v.ID)
				}
			}},
	}
}

// createTask POSTs a new task to path and returns its id, the last
// segment of the Location the broker answers with.
func createTask(c *cmdCtx, path string, body any) (string, error) {
	loc, err := c.api.Create(c.ctx, http.MethodPost, path, body)
	if err != nil {
		return "", err
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	if id == "" {
		return "", fmt.Errorf("the broker's Location %q names no task", loc)
	}
	return id, nil
}
