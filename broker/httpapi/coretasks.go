package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/ggfleet/ggfleet/broker/cores/corestore"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// CoreService runs core tasks and serves core records (broker/cores.Service).
// Submit validates the task (errkind.Invalid); this edge only decodes it.
type CoreService interface {
	Submit(ctx context.Context, t cdf.NewCoreTask) (taskID string, err error)
	// Plan says what Submit would do, per core, and writes nothing (?dryRun=true).
	Plan(ctx context.Context, t cdf.NewCoreTask) (cdf.CoreTaskPlan, error)
	GetTask(ctx context.Context, id string) (cdf.CoreTask, error)
	ListTasks(ctx context.Context, count int, after string) ([]cdf.CoreTask, bool, error)
	GetCoreTask(ctx context.Context, core, id string) (cdf.CoreTask, error)
	GetCore(ctx context.Context, name string) (cdf.Core, error)
	ListCores(ctx context.Context, f corestore.Filter, count int, after string) ([]cdf.Core, bool, error)
}

func (a *API) createCoreTask(w http.ResponseWriter, r *http.Request) {
	dryRun, err := parseBool(r, "dryRun", false)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var t cdf.NewCoreTask
	if err := decodeJSON(r, &t); err != nil {
		a.writeError(w, r, err)
		return
	}
	if dryRun {
		plan, err := a.d.Cores.Plan(r.Context(), t)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, plan)
		return
	}
	id, err := a.d.Cores.Submit(r.Context(), t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/coreTasks/"+id)
	w.Header().Set("X-Taskid", id)
	w.WriteHeader(http.StatusAccepted)
}

func (a *API) listCoreTasks(w http.ResponseWriter, r *http.Request) {
	p, err := parsePage(r, "exclusiveStartTaskId")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	list, more, err := a.d.Cores.ListTasks(r.Context(), p.Count, p.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []cdf.CoreTask{}
	}
	var last any
	if len(list) > 0 {
		last = list[len(list)-1].ID
	}
	writeJSON(w, r, http.StatusOK, cdf.CoreTaskList{Tasks: list, Pagination: p.pagination(more, "taskId", last, false)})
}

func (a *API) getCoreTask(w http.ResponseWriter, r *http.Request) {
	t, err := a.d.Cores.GetTask(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, t)
}

func (a *API) getCoreCoreTask(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName("core name", name); err != nil {
		a.writeError(w, r, err)
		return
	}
	t, err := a.d.Cores.GetCoreTask(r.Context(), name, r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, t)
}

func (a *API) getCore(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName("core name", name); err != nil {
		a.writeError(w, r, err)
		return
	}
	c, err := a.d.Cores.GetCore(r.Context(), name)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, c)
}

func (a *API) listCores(w http.ResponseWriter, r *http.Request) {
	p, err := parsePage(r, "exclusiveStartThingName")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	f := corestore.Filter{TemplateName: q.Get("templateName")}
	if raw := q.Get("templateVersion"); raw != "" {
		v, err := strconv.Atoi(raw)
		if err != nil || v < 0 {
			a.writeError(w, r, errkind.New(errkind.Invalid, "templateVersion must be a whole number, got %q", raw))
			return
		}
		f.TemplateVersion = &v
	}
	if f.FailedOnly, err = parseBool(r, "failedOnly", false); err != nil {
		a.writeError(w, r, err)
		return
	}
	list, more, err := a.d.Cores.ListCores(r.Context(), f, p.Count, p.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []cdf.Core{}
	}
	var last any
	if len(list) > 0 {
		last = list[len(list)-1].Name
	}
	writeJSON(w, r, http.StatusOK, cdf.CoreList{Cores: list, Pagination: p.pagination(more, "thingName", last, false)})
}
