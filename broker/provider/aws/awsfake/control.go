package awsfake

import (
	"encoding/json"
	"net/http"
	"sort"
)

// routeControl serves the fake's own unsigned control API under /_fake/,
// so a test driving a broker process can play the parts AWS plays on its
// own (a nucleus connecting) and look at what the broker did:
//
//	POST /_fake/coreDevices/{name}?status=HEALTHY  register a core device
//	GET  /_fake/calls                               calls per operation
//	GET  /_fake/dataEndpoint                        the MQTT data endpoint (mqtt.go)
//	GET  /_fake/events                              events received by PutEvents
//	GET  /_fake/deployments                         deployments made by CreateDeployment
//	POST /_fake/jobExecutions/{thing}?status=S      finish the thing's queued/in-progress executions
//	POST /_fake/components/{name}/versions/{version} add a private component version
//	PUT  /_fake/coreDevices/{name}/installedComponents  set the components a core reports
//	     (body: [{"componentName": ..., "componentVersion": ...}])
func (f *Fake) routeControl(mux *http.ServeMux) {
	mux.HandleFunc("POST /_fake/components/{name}/versions/{version}", func(w http.ResponseWriter, r *http.Request) {
		if err := f.AddComponent(r.PathValue("name"), r.PathValue("version")); err != nil {
			writeJSONError(w, invalid("%v", err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /_fake/coreDevices/{name}/installedComponents", func(w http.ResponseWriter, r *http.Request) {
		var list []InstalledComponent
		if err := json.NewDecoder(r.Body).Decode(&list); err != nil {
			writeJSONError(w, invalid("the body must be a JSON list of {componentName, componentVersion}: %v", err))
			return
		}
		if err := f.SetInstalledComponents(r.PathValue("name"), list); err != nil {
			writeJSONError(w, invalid("%v", err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_fake/coreDevices/{name}", func(w http.ResponseWriter, r *http.Request) {
		status := r.URL.Query().Get("status")
		if status == "" {
			status = CoreHealthy
		}
		if err := f.RegisterCoreDevice(r.PathValue("name"), status); err != nil {
			writeJSONError(w, invalid("%v", err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /_fake/calls", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		calls := make(map[string]int, len(f.calls))
		for k, v := range f.calls {
			calls[k] = v
		}
		f.mu.Unlock()
		writeJSON(w, calls)
	})
	mux.HandleFunc("GET /_fake/events", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, f.Events())
	})
	mux.HandleFunc("GET /_fake/deployments", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, f.Deployments())
	})
	mux.HandleFunc("POST /_fake/jobExecutions/{thing}", func(w http.ResponseWriter, r *http.Request) {
		n, err := f.FinishJobExecutions(r.PathValue("thing"), r.URL.Query().Get("status"))
		if err != nil {
			writeJSONError(w, invalid("%v", err))
			return
		}
		writeJSON(w, map[string]int{"finished": n})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, errorf(http.StatusNotFound, "NotFound", "the fake's control API has no %s %s", r.Method, r.URL.Path))
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// AllCalls returns the number of requests per operation so far.
func (f *Fake) AllCalls() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.calls))
	for k, v := range f.calls {
		out[k] = v
	}
	return out
}

// Operations lists the operations that have been called, sorted.
func (f *Fake) Operations() []string {
	calls := f.AllCalls()
	ops := make([]string, 0, len(calls))
	for op := range calls {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}
