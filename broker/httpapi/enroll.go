package httpapi

import "net/http"

// EnrollmentService is PLACEHOLDER: the owner of this file replaces it.
type EnrollmentService interface{}

func (a *API) createEnrollmentToken(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) enroll(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}
