package httpapi

import (
	"context"
	"net/http"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

// DeviceService runs client-device tasks and serves client devices (broker/devices.Service).
// Submit validates the task and checks the core (errkind.Invalid).
type DeviceService interface {
	Submit(ctx context.Context, core string, t cdf.NewDeviceTask) (taskID string, err error)
	// Plan says what Submit would do, per device, and writes nothing (?dryRun=true).
	Plan(ctx context.Context, core string, t cdf.NewDeviceTask) (cdf.DeviceTaskPlan, error)
	GetTask(ctx context.Context, id string) (cdf.DeviceTask, error)
	ListTasks(ctx context.Context, count int, after string) ([]cdf.DeviceTask, bool, error)
	GetDevice(ctx context.Context, name string) (cdf.ClientDevice, error)
	ListDevices(ctx context.Context, core string, count int, after string) ([]cdf.ClientDevice, bool, error)
	DeleteDevice(ctx context.Context, name string, deprovision, disassociate bool) error
}

func (a *API) createDeviceTask(w http.ResponseWriter, r *http.Request) {
	core := r.PathValue("name")
	if err := checkName("core name", core); err != nil {
		a.writeError(w, r, err)
		return
	}
	dryRun, err := parseBool(r, "dryRun", false)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var t cdf.NewDeviceTask
	if err := decodeJSON(r, &t); err != nil {
		a.writeError(w, r, err)
		return
	}
	t.CoreName = core // the path wins over the body
	if dryRun {
		plan, err := a.d.Devices.Plan(r.Context(), core, t)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, r, http.StatusOK, plan)
		return
	}
	id, err := a.d.Devices.Submit(r.Context(), core, t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/deviceTasks/"+id)
	w.Header().Set("X-Taskid", id)
	w.WriteHeader(http.StatusAccepted)
}

func (a *API) listDeviceTasks(w http.ResponseWriter, r *http.Request) {
	p, err := parsePage(r, "exclusiveStartTaskId")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	list, more, err := a.d.Devices.ListTasks(r.Context(), p.Count, p.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []cdf.DeviceTask{}
	}
	var last any
	if len(list) > 0 {
		last = list[len(list)-1].ID
	}
	writeJSON(w, r, http.StatusOK, cdf.DeviceTaskList{Tasks: list, Pagination: p.pagination(more, "taskId", last, false)})
}

func (a *API) getDeviceTask(w http.ResponseWriter, r *http.Request) {
	t, err := a.d.Devices.GetTask(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, t)
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	p, err := parsePage(r, "exclusiveStartThingName")
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
	list, more, err := a.d.Devices.ListDevices(r.Context(), core, p.Count, p.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if list == nil {
		list = []cdf.ClientDevice{}
	}
	var last any
	if len(list) > 0 {
		last = list[len(list)-1].Name
	}
	writeJSON(w, r, http.StatusOK, cdf.ClientDeviceList{Devices: list, Pagination: p.pagination(more, "thingName", last, false)})
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName("device name", name); err != nil {
		a.writeError(w, r, err)
		return
	}
	d, err := a.d.Devices.GetDevice(r.Context(), name)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, d)
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName("device name", name); err != nil {
		a.writeError(w, r, err)
		return
	}
	deprovision, err := parseBool(r, "deprovision", true)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	disassociate, err := parseBool(r, "disassociateDeviceFromCore", true)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.d.Devices.DeleteDevice(r.Context(), name, deprovision, disassociate); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
