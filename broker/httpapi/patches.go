package httpapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"

	"github.com/ggfleet/ggfleet/broker/patches"
	"github.com/ggfleet/ggfleet/shared/patchmsg"
)

// PatchService is device patching (broker/patches.Service): templates,
// targets, tasks and patches (spec/device-patcher.md §1 and §6.2).
type PatchService interface {
	CreateTemplate(ctx context.Context, in patches.TemplateInput) error
	UpdateTemplate(ctx context.Context, name string, in patches.TemplateInput) (patches.Template, error)
	GetTemplate(ctx context.Context, name string, versionNo int) (patches.Template, error)
	ListTemplates(ctx context.Context, count int, after string) ([]patches.Template, bool, error)
	DeleteTemplate(ctx context.Context, name string) error
	PutArtifact(ctx context.Context, template, name string, data []byte) (patches.Artifact, error)
	Blob(ctx context.Context, sum, expires, signature string) ([]byte, error)

	PutTarget(ctx context.Context, deviceID string, t patchmsg.Target) (patches.Target, error)
	GetTarget(ctx context.Context, deviceID string) (patches.Target, error)
	ListTargets(ctx context.Context, core string, count int, after string) ([]patches.Target, bool, error)
	DeleteTarget(ctx context.Context, deviceID string) error
	ProbeTarget(ctx context.Context, deviceID string) (patches.Probe, error)

	Submit(ctx context.Context, in patches.NewTask) (string, error)
	GetTask(ctx context.Context, id string) (patches.Task, error)
	ListTaskPatches(ctx context.Context, taskID string, count int, after string) ([]patches.Patch, string, error)
	ListDevicePatches(ctx context.Context, deviceID, status string, count int, after string) ([]patches.Patch, string, error)
	GetPatch(ctx context.Context, id string) (patches.Patch, error)
	Retry(ctx context.Context, id string) (patches.Patch, error)
	Cancel(ctx context.Context, id string) (patches.Patch, error)
	DeletePatch(ctx context.Context, id string) error
	Steps(ctx context.Context, id string) ([]patchmsg.StepResult, error)
	Logs(ctx context.Context, id string, attempt int, step, stream string) ([]byte, error)
}

// MaxArtifactBytes bounds one PUT /patchTemplates/{name}/artifacts/{artifact}.
const MaxArtifactBytes = 64 << 20

// patchPagination is the patcher's pagination block: count is a number
// (§6.2 fixes CDF's string).
type patchPagination struct {
	Count         int            `json:"count,omitempty"`
	LastEvaluated map[string]any `json:"lastEvaluated,omitempty"`
}

// pagination returns the block, or nil when no count was asked and no
// page follows.
func patchPage(p Page, cursorKey string, next any) *patchPagination {
	pg := &patchPagination{}
	if p.RawCount != "" {
		pg.Count = p.Count
	}
	if next != nil && next != "" {
		pg.LastEvaluated = map[string]any{cursorKey: next}
	}
	if pg.Count == 0 && pg.LastEvaluated == nil {
		return nil
	}
	return pg
}

type patchTemplateList struct {
	Templates  []patches.Template `json:"templates"`
	Pagination *patchPagination   `json:"pagination,omitempty"`
}

type patchList struct {
	Patches    []patches.Patch  `json:"patches"`
	Pagination *patchPagination `json:"pagination,omitempty"`
}

type targetList struct {
	Targets    []patches.Target `json:"targets"`
	Pagination *patchPagination `json:"pagination,omitempty"`
}

type stepList struct {
	Steps []patchmsg.StepResult `json:"steps"`
}

// patchRetry is the body of PATCH /patches/{id}.
type patchRetry struct {
	PatchStatus string `json:"patchStatus"`
}

// patching adapts a patch handler to a route: without a patch service the
// broker answers 503 before the handler runs.
func (a *API) patching(h func(http.ResponseWriter, *http.Request, PatchService)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.d.Patches == nil {
			writeMessage(w, r, http.StatusServiceUnavailable, "device patching is not available on this broker")
			return
		}
		h(w, r, a.d.Patches)
	}
}

// templateView hides the playbook bytes (CDF returns playbookSource only).
func templateView(t patches.Template) patches.Template {
	t.PlaybookFileContents = ""
	return t
}

func (a *API) createPatchTemplate(w http.ResponseWriter, r *http.Request, svc PatchService) {
	var in patches.TemplateInput
	if err := decodeJSON(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := svc.CreateTemplate(r.Context(), in); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) listPatchTemplates(w http.ResponseWriter, r *http.Request, svc PatchService) {
	p, err := parsePage(r, "exclusiveStartName")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	list, more, err := svc.ListTemplates(r.Context(), p.Count, p.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := patchTemplateList{Templates: make([]patches.Template, 0, len(list))}
	for _, t := range list {
		out.Templates = append(out.Templates, templateView(t))
	}
	var next any
	if more {
		next = list[len(list)-1].Name
	}
	out.Pagination = patchPage(p, "name", next)
	writeJSON(w, r, http.StatusOK, out)
}

func (a *API) getPatchTemplate(w http.ResponseWriter, r *http.Request, svc PatchService) {
	v := 0
	if raw := r.URL.Query().Get("versionNo"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			writeMessage(w, r, http.StatusBadRequest, "versionNo must be a whole number from 1, got "+strconv.Quote(raw))
			return
		}
		v = n
	}
	t, err := svc.GetTemplate(r.Context(), r.PathValue("name"), v)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, templateView(t))
}

func (a *API) updatePatchTemplate(w http.ResponseWriter, r *http.Request, svc PatchService) {
	var in patches.TemplateInput
	if err := decodeJSON(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	if _, err := svc.UpdateTemplate(r.Context(), r.PathValue("name"), in); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) deletePatchTemplate(w http.ResponseWriter, r *http.Request, svc PatchService) {
	if err := svc.DeleteTemplate(r.Context(), r.PathValue("name")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) putPatchArtifact(w http.ResponseWriter, r *http.Request, svc PatchService) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if len(data) == 0 {
		writeMessage(w, r, http.StatusBadRequest, "the request body is empty: send the artifact's bytes")
		return
	}
	art, err := svc.PutArtifact(r.Context(), r.PathValue("name"), r.PathValue("artifact"), data)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, art)
}

// getPatchBlob serves a blob named by a signed URL of a patch job: open,
// because the agent (or the client device itself) has no API token; the
// signature and expiry are the authorisation.
func (a *API) getPatchBlob(w http.ResponseWriter, r *http.Request, svc PatchService) {
	q := r.URL.Query()
	data, err := svc.Blob(r.Context(), r.PathValue("sha256"), q.Get("expires"), q.Get("signature"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	h.Set("X-Checksum-Sha256", r.PathValue("sha256"))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
}

func (a *API) putTarget(w http.ResponseWriter, r *http.Request, svc PatchService) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := patches.CheckNoSecrets(body); err != nil {
		a.writeError(w, r, err)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var in patchmsg.Target
	if err := decodeJSON(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	t, err := svc.PutTarget(r.Context(), r.PathValue("deviceId"), in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, t)
}

func (a *API) getTarget(w http.ResponseWriter, r *http.Request, svc PatchService) {
	t, err := svc.GetTarget(r.Context(), r.PathValue("deviceId"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, t)
}

func (a *API) listTargets(w http.ResponseWriter, r *http.Request, svc PatchService) {
	p, err := parsePage(r, "exclusiveStartDeviceId")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	core := r.URL.Query().Get("coreName")
	if core != "" {
		if err := checkName("coreName", core); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	list, more, err := svc.ListTargets(r.Context(), core, p.Count, p.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []patches.Target{}
	}
	var next any
	if more {
		next = list[len(list)-1].DeviceID
	}
	writeJSON(w, r, http.StatusOK, targetList{Targets: list, Pagination: patchPage(p, "deviceId", next)})
}

func (a *API) deleteTarget(w http.ResponseWriter, r *http.Request, svc PatchService) {
	if err := svc.DeleteTarget(r.Context(), r.PathValue("deviceId")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) probeTarget(w http.ResponseWriter, r *http.Request, svc PatchService) {
	p, err := svc.ProbeTarget(r.Context(), r.PathValue("deviceId"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusAccepted, p)
}

func (a *API) createPatchTask(w http.ResponseWriter, r *http.Request, svc PatchService) {
	var in patches.NewTask
	if err := decodeJSON(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	id, err := svc.Submit(r.Context(), in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/patchTasks/"+id)
	w.Header().Set("X-Taskid", id)
	w.WriteHeader(http.StatusAccepted)
}

func (a *API) getPatchTask(w http.ResponseWriter, r *http.Request, svc PatchService) {
	t, err := svc.GetTask(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, t)
}

func (a *API) writePatchList(w http.ResponseWriter, r *http.Request, p Page, list []patches.Patch, next string, err error) {
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []patches.Patch{}
	}
	writeJSON(w, r, http.StatusOK, patchList{Patches: list, Pagination: patchPage(p, "nextToken", next)})
}

func (a *API) listPatchTaskPatches(w http.ResponseWriter, r *http.Request, svc PatchService) {
	p, err := parsePage(r, "exclusiveStartToken")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	list, next, err := svc.ListTaskPatches(r.Context(), r.PathValue("id"), p.Count, p.After)
	a.writePatchList(w, r, p, list, next, err)
}

// listDevicePatches filters by patchStatus, or status as the CDF client
// sends it.
func (a *API) listDevicePatches(w http.ResponseWriter, r *http.Request, svc PatchService) {
	p, err := parsePage(r, "exclusiveStartToken")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	status := r.URL.Query().Get("patchStatus")
	if status == "" {
		status = r.URL.Query().Get("status")
	}
	list, next, err := svc.ListDevicePatches(r.Context(), r.PathValue("name"), status, p.Count, p.After)
	a.writePatchList(w, r, p, list, next, err)
}

func (a *API) getPatch(w http.ResponseWriter, r *http.Request, svc PatchService) {
	p, err := svc.GetPatch(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, p)
}

// retryPatch is PATCH /patches/{id} and its POST alias (the CDF client
// sends POST): the body must be {"patchStatus":"retry"}.
func (a *API) retryPatch(w http.ResponseWriter, r *http.Request, svc PatchService) {
	var in patchRetry
	if err := decodeJSON(r, &in); err != nil {
		a.writeError(w, r, err)
		return
	}
	if in.PatchStatus != patchmsg.PatchRetry {
		writeMessage(w, r, http.StatusBadRequest, "UNSUPPORTED_PATCH_STATUS: patchStatus must be \"retry\", got "+strconv.Quote(in.PatchStatus))
		return
	}
	if _, err := svc.Retry(r.Context(), r.PathValue("id")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) deletePatch(w http.ResponseWriter, r *http.Request, svc PatchService) {
	if err := svc.DeletePatch(r.Context(), r.PathValue("id")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) cancelPatch(w http.ResponseWriter, r *http.Request, svc PatchService) {
	p, err := svc.Cancel(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, p)
}

func (a *API) getPatchSteps(w http.ResponseWriter, r *http.Request, svc PatchService) {
	steps, err := svc.Steps(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, stepList{Steps: steps})
}

// getPatchLogs answers text/plain: the stored output of the current
// attempt (or ?attempt=N), of one step and stream when asked.
func (a *API) getPatchLogs(w http.ResponseWriter, r *http.Request, svc PatchService) {
	q := r.URL.Query()
	attempt := 0
	if raw := q.Get("attempt"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			writeMessage(w, r, http.StatusBadRequest, "attempt must be a whole number from 1, got "+strconv.Quote(raw))
			return
		}
		attempt = n
	}
	data, err := svc.Logs(r.Context(), r.PathValue("id"), attempt, q.Get("step"), q.Get("stream"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// activationsGone answers the CDF /activations endpoints: SSM hybrid
// activations are replaced by target profiles.
func (a *API) activationsGone(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotFound, "/activations (SSM hybrid activation) is not supported by ggfleet: "+
		"describe how the core reaches the device with PUT /targets/{deviceId} (a connection profile; secrets stay on the core), "+
		"then check it with POST /targets/{deviceId}/probe")
}
