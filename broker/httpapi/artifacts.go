package httpapi

import "net/http"

// ArtifactService is PLACEHOLDER: the owner of this file replaces it.
type ArtifactService interface{}

func (a *API) getArtifact(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}
