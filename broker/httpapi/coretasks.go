package httpapi

import "net/http"

// CoreService is PLACEHOLDER: the owner of this file replaces it.
type CoreService interface{}

func (a *API) createCoreTask(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) listCoreTasks(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) getCoreTask(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) listCores(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) getCore(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) getCoreCoreTask(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}
