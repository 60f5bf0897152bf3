package httpapi

import "net/http"

// FleetService is PLACEHOLDER: the owner of this file replaces it.
type FleetService interface{}

func (a *API) fleetSummary(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}
