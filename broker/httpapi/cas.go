package httpapi

import "net/http"

// CAService is PLACEHOLDER: the owner of this file replaces it.
type CAService interface{}

func (a *API) listCAs(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) createCA(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}
