package httpapi

import "net/http"

// DeviceService is PLACEHOLDER: the owner of this file replaces it.
type DeviceService interface{}

func (a *API) createDeviceTask(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) listDeviceTasks(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) getDeviceTask(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) {
	writeMessage(w, r, http.StatusNotImplemented, "PLACEHOLDER")
}
