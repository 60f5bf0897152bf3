package httpapi

import "net/http"

// RegistryService is PLACEHOLDER: the owner of this file replaces it.
type RegistryService interface{}

func (a *API) putPolicy(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) getThing(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) listAssociatedClientDevices(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}
