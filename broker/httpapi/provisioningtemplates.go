package httpapi

import "net/http"

// ProvisioningTemplateService is PLACEHOLDER: the owner of this file replaces it.
type ProvisioningTemplateService interface{}

func (a *API) putProvisioningTemplate(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) listProvisioningTemplates(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) getProvisioningTemplate(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) deleteProvisioningTemplate(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}
