package httpapi

import (
	"context"
	"net/http"

	"github.com/ggfleet/ggfleet/shared/cdf"
)

// FleetService computes the fleet summary; *fleet.Service satisfies it.
type FleetService interface {
	Summary(ctx context.Context) (cdf.FleetSummary, error)
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
