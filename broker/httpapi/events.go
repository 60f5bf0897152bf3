package httpapi

import "net/http"

// EventStream is PLACEHOLDER: the owner of this file replaces it.
type EventStream interface{}

func (a *API) events(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}
