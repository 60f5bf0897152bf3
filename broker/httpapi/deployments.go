package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// DeploymentService runs deployment tasks and serves them
// (broker/deploy.Service). Submit validates the task and resolves its
// template (errkind.Invalid, errkind.NotFound); this edge only decodes it.
type DeploymentService interface {
	Submit(ctx context.Context, t cdf.NewDeploymentTask) (taskID string, err error)
	// Plan says what Submit would do, per core, and writes nothing (?dryRun=true).
	Plan(ctx context.Context, t cdf.NewDeploymentTask) (cdf.DeploymentPlan, error)
	GetTask(ctx context.Context, id string) (cdf.DeploymentTask, error)
	ListTasks(ctx context.Context, count int, after string) ([]cdf.DeploymentTask, bool, error)
	ListTaskCores(ctx context.Context, id string, count int, after string) ([]cdf.CoreDeployment, bool, error)
	GetTaskCore(ctx context.Context, id, core string) (cdf.CoreDeployment, error)
	ListCoreDeployments(ctx context.Context, core string, count int, after string) ([]cdf.CoreDeployment, bool, error)
}

// DecodeDeploymentTask decodes the body of POST /deploymentTasks with
// messages that say what to fix (exported for the fuzz test).
func DecodeDeploymentTask(body []byte) (cdf.NewDeploymentTask, error) {
	var t cdf.NewDeploymentTask
	return t, versionError(DecodeBody(body, &t))
}

// versionError turns a bad template.version into a 400 that says so (the
// generic decoder would only say "malformed JSON").
func versionError(err error) error {
	var ve *cdf.DeploymentVersionError
	if errors.As(err, &ve) {
		return errkind.New(errkind.Invalid, "%s", ve.Error())
	}
	return err
}

func (a *API) deployments(w http.ResponseWriter, r *http.Request) (DeploymentService, bool) {
	if a.d.Deployments == nil {
		writeMessage(w, r, http.StatusServiceUnavailable, "deployments are not available on this broker")
		return nil, false
	}
	return a.d.Deployments, true
}

func (a *API) createDeploymentTask(w http.ResponseWriter, r *http.Request) {
	svc, ok := a.deployments(w, r)
	if !ok {
		return
	}
	dryRun, err := parseBool(r, "dryRun", false)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var t cdf.NewDeploymentTask
	if err := decodeJSON(r, &t); err != nil {
		a.writeError(w, r, versionError(err))
		return
	}
	if dryRun {
		plan, err := svc.Plan(r.Context(), t)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, plan)
		return
	}
	id, err := svc.Submit(r.Context(), t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/deploymentTasks/"+id)
	w.Header().Set("X-Taskid", id)
	w.WriteHeader(http.StatusAccepted)
}

// listDeploymentTasks answers as CDF does: pagination is always present,
// and with no tasks the body is {"pagination":{}} (no deploymentTasks key).
func (a *API) listDeploymentTasks(w http.ResponseWriter, r *http.Request) {
	svc, ok := a.deployments(w, r)
	if !ok {
		return
	}
	p, err := parsePage(r, "exclusiveStartTaskId")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	list, more, err := svc.ListTasks(r.Context(), p.Count, p.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var last any
	if len(list) > 0 {
		last = list[len(list)-1].ID
	}
	writeJSON(w, r, http.StatusOK, cdf.DeploymentTaskList{DeploymentTasks: list, Pagination: p.pagination(more, "taskId", last, true)})
}

func (a *API) getDeploymentTask(w http.ResponseWriter, r *http.Request) {
	svc, ok := a.deployments(w, r)
	if !ok {
		return
	}
	t, err := svc.GetTask(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, t)
}

func (a *API) listDeploymentTaskCores(w http.ResponseWriter, r *http.Request) {
	svc, ok := a.deployments(w, r)
	if !ok {
		return
	}
	p, err := parsePage(r, "exclusiveStartThingName")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	list, more, err := svc.ListTaskCores(r.Context(), r.PathValue("id"), p.Count, p.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []cdf.CoreDeployment{}
	}
	var last any
	if len(list) > 0 {
		last = list[len(list)-1].CoreName
	}
	writeJSON(w, r, http.StatusOK, cdf.DeploymentTaskCoreList{Cores: list, Pagination: p.pagination(more, "thingName", last, true)})
}

func (a *API) getDeploymentTaskCore(w http.ResponseWriter, r *http.Request) {
	svc, ok := a.deployments(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := checkName("core name", name); err != nil {
		a.writeError(w, r, err)
		return
	}
	c, err := svc.GetTaskCore(r.Context(), r.PathValue("id"), name)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, c)
}

func (a *API) listCoreDeployments(w http.ResponseWriter, r *http.Request) {
	svc, ok := a.deployments(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := checkName("core name", name); err != nil {
		a.writeError(w, r, err)
		return
	}
	p, err := parsePage(r, "exclusiveStartTaskId")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	list, more, err := svc.ListCoreDeployments(r.Context(), name, p.Count, p.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []cdf.CoreDeployment{}
	}
	var last any
	if len(list) > 0 {
		last = list[len(list)-1].TaskID
	}
	writeJSON(w, r, http.StatusOK, cdf.CoreDeploymentList{Deployments: list, Pagination: p.pagination(more, "taskId", last, true)})
}
