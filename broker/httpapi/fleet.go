package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/fleet"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// FleetService computes the fleet summary and lists the fleet's cores;
// *fleet.Service satisfies it.
type FleetService interface {
	Summary(ctx context.Context) (cdf.FleetSummary, error)
	Cores(ctx context.Context, q fleet.CoreQuery) (cdf.FleetCoreList, error)
}

// fleetSummary serves GET /fleet/summary (spec §2.6, §6).
func (a *API) fleetSummary(w http.ResponseWriter, r *http.Request) {
	if a.d.Fleet == nil {
		writeMessage(w, r, http.StatusServiceUnavailable, "the fleet summary is not configured on this broker")
		return
	}
	s, err := a.d.Fleet.Summary(r.Context())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, s)
}

// fleetCores serves GET /fleet/cores (a ggfleet addition): the cores with
// their health and connectivity, filtered by status, connectivity, name and
// desired template, paged by thing name like GET /cores.
func (a *API) fleetCores(w http.ResponseWriter, r *http.Request) {
	if a.d.Fleet == nil {
		writeMessage(w, r, http.StatusServiceUnavailable, "the fleet view is not configured on this broker")
		return
	}
	p, err := parsePage(r, "exclusiveStartThingName")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	v := r.URL.Query()
	q := fleet.CoreQuery{
		NameContains: v.Get("nameContains"), TemplateName: v.Get("templateName"),
		Status: v.Get("status"), Connectivity: v.Get("connectivity"), After: p.After, Count: p.Count,
	}
	if raw := v.Get("templateVersion"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			a.writeError(w, r, errkind.New(errkind.Invalid, "templateVersion must be a positive whole number, got %q", raw))
			return
		}
		q.TemplateVersion = n
	}
	list, err := a.d.Fleet.Cores(r.Context(), q)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if p.RawCount != "" {
		if list.Pagination == nil {
			list.Pagination = &cdf.Pagination{}
		}
		list.Pagination.Count = p.RawCount
	}
	writeJSON(w, r, http.StatusOK, list)
}
