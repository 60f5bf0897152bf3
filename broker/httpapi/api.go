// Package httpapi is the broker's HTTP edge: one route table, content
// negotiation (CDF media type, application/json, */*), authentication,
// request decoding and validation with clear 400s, and the mapping of
// errkind kinds to status codes. Handlers are thin: decode, call a domain
// service, encode. Domain packages never import this one.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
)

// Authenticator checks API bearer tokens (and dashboard session cookies).
type Authenticator interface {
	// Authenticate returns nil when token is a valid API token, and an
	// errkind.Unauthorized error when it is not; any other error means the
	// token could not be checked (the API answers with that error's status,
	// 503 when the database is unavailable).
	Authenticate(ctx context.Context, token string) error
}

// Deps are the services the API serves. Each interface is declared in the
// file of the handlers that use it.
type Deps struct {
	Logger       *slog.Logger
	Auth         Authenticator
	Sessions     SessionAuthenticator            // nil: the dashboard's session cookie is not accepted
	Ready        func(ctx context.Context) error // nil error: ready to serve
	Templates    TemplateService
	Cores        CoreService
	Devices      DeviceService
	Provisioning ProvisioningTemplateService
	Registry     RegistryService
	CAs          CAService
	Enrollment   EnrollmentService
	Artifacts    ArtifactService
	Fleet        FleetService
	Deployments  DeploymentService
	Patches      PatchService // nil: device patching answers 503
	Events       EventStream
	MaxBodyBytes int64 // default 1 MiB
	ExtraRoutes  []Route
	Metrics      *Metrics // nil: no instrumentation, GET /metrics answers 404
	BaseURL      string   // how clients reach this API, for location headers and messages
	Downloads    Downloads
}

// API is the HTTP API.
type API struct {
	d      Deps
	log    *slog.Logger
	routes []Route
}

// New builds the API from its dependencies.
func New(d Deps) *API {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.MaxBodyBytes <= 0 {
		d.MaxBodyBytes = 1 << 20
	}
	a := &API{d: d, log: d.Logger}
	a.routes = append(a.table(), d.ExtraRoutes...)
	return a
}

// Route is one entry of the route table.
type Route struct {
	Pattern string // Go 1.22 mux pattern, "GET /cores/{name}"
	Handler http.HandlerFunc
	// Open routes need no bearer token (DESIGN.md's list).
	Open bool
	// Raw routes are outside the JSON Accept gate (artifacts, scripts, streams).
	Raw bool
	// MaxBodyBytes overrides Deps.MaxBodyBytes for this route (uploads).
	MaxBodyBytes int64
}

// Routes returns the route table (tests enumerate it to check auth).
func (a *API) Routes() []Route { return a.routes }

// Handler returns the http.Handler serving every route.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range a.routes {
		// Instrumented outside the gates, so 401s and 415s are counted too.
		mux.Handle(rt.Pattern, a.d.Metrics.instrument(rt.Pattern, a.wrap(rt)))
	}
	mux.Handle("/", a.d.Metrics.instrument(unmatchedRoute, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeMessage(w, r, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})))
	return a.recoverer(mux)
}

// table is the one route table of the broker.
func (a *API) table() []Route {
	dl := newDownloadServer(a)
	return []Route{
		{Pattern: "GET /healthz", Handler: a.healthz, Open: true, Raw: true},
		{Pattern: "GET /readyz", Handler: a.readyz, Open: true, Raw: true},

		// Component templates (spec §2.1).
		{Pattern: "POST /templates", Handler: a.createTemplate},
		{Pattern: "GET /templates", Handler: a.listTemplates},
		{Pattern: "GET /templates/{name}", Handler: a.getTemplate},
		{Pattern: "PUT /templates/{name}", Handler: a.updateTemplate},
		{Pattern: "DELETE /templates/{name}", Handler: a.deleteTemplate},
		{Pattern: "GET /templates/{name}/versions", Handler: a.listTemplateVersions},
		{Pattern: "GET /templates/{name}/versions/{version}", Handler: a.getTemplateVersion},

		// Core tasks and cores (spec §2.2, §2.3).
		{Pattern: "POST /coreTasks", Handler: a.createCoreTask},
		{Pattern: "GET /coreTasks", Handler: a.listCoreTasks},
		{Pattern: "GET /coreTasks/{id}", Handler: a.getCoreTask},
		{Pattern: "GET /cores", Handler: a.listCores},
		{Pattern: "GET /cores/{name}", Handler: a.getCore},
		{Pattern: "GET /cores/{name}/coreTasks/{id}", Handler: a.getCoreCoreTask},

		// Client-device tasks and client devices (spec §2.4).
		{Pattern: "POST /cores/{name}/deviceTasks", Handler: a.createDeviceTask},
		{Pattern: "GET /deviceTasks", Handler: a.listDeviceTasks},
		{Pattern: "GET /deviceTasks/{id}", Handler: a.getDeviceTask},
		{Pattern: "GET /devices", Handler: a.listDevices},
		{Pattern: "GET /devices/{name}", Handler: a.getDevice},
		{Pattern: "DELETE /devices/{name}", Handler: a.deleteDevice},

		// Provisioning templates and policies (ggfleet additions).
		{Pattern: "PUT /provisioningTemplates/{name}", Handler: a.putProvisioningTemplate},
		{Pattern: "GET /provisioningTemplates", Handler: a.listProvisioningTemplates},
		{Pattern: "GET /provisioningTemplates/{name}", Handler: a.getProvisioningTemplate},
		{Pattern: "DELETE /provisioningTemplates/{name}", Handler: a.deleteProvisioningTemplate},
		{Pattern: "PUT /registry/policies/{name}", Handler: a.putPolicy},

		// Registry view (ggfleet additions).
		{Pattern: "GET /registry/things/{name}", Handler: a.getThing},
		{Pattern: "GET /registry/coreDevices/{name}/associatedClientDevices", Handler: a.listAssociatedClientDevices},

		// Certificate authorities (ggfleet additions).
		{Pattern: "GET /certificateAuthorities", Handler: a.listCAs},
		{Pattern: "POST /certificateAuthorities", Handler: a.createCA},

		// Enrollment (ggfleet additions). /enroll authenticates with its one-time token.
		{Pattern: "POST /cores/{name}/enrollmentTokens", Handler: a.createEnrollmentToken},
		{Pattern: "POST /enroll", Handler: a.enroll, Open: true},

		// Artifacts (certs.zip, installerConfig.yml).
		{Pattern: "GET /artifacts/{key...}", Handler: a.getArtifact, Raw: true},

		// Deployment tasks (spec §2.5) and a core's deployments (§2.3).
		{Pattern: "POST /deploymentTasks", Handler: a.createDeploymentTask},
		{Pattern: "GET /deploymentTasks", Handler: a.listDeploymentTasks},
		{Pattern: "GET /deploymentTasks/{id}", Handler: a.getDeploymentTask},
		{Pattern: "GET /deploymentTasks/{id}/cores", Handler: a.listDeploymentTaskCores},
		{Pattern: "GET /deploymentTasks/{id}/cores/{name}", Handler: a.getDeploymentTaskCore},
		{Pattern: "GET /cores/{name}/deployments", Handler: a.listCoreDeployments},

		// Device patching (spec/device-patcher.md §1, §6.2): templates, targets, tasks, patches.
		{Pattern: "POST /patchTemplates", Handler: a.patching(a.createPatchTemplate)},
		{Pattern: "GET /patchTemplates", Handler: a.patching(a.listPatchTemplates)},
		{Pattern: "GET /patchTemplates/{name}", Handler: a.patching(a.getPatchTemplate)},
		{Pattern: "PATCH /patchTemplates/{name}", Handler: a.patching(a.updatePatchTemplate)},
		{Pattern: "DELETE /patchTemplates/{name}", Handler: a.patching(a.deletePatchTemplate)},
		{Pattern: "PUT /patchTemplates/{name}/artifacts/{artifact}", Handler: a.patching(a.putPatchArtifact), MaxBodyBytes: MaxArtifactBytes},
		{Pattern: "GET /patchBlobs/{sha256}", Handler: a.patching(a.getPatchBlob), Open: true, Raw: true},
		{Pattern: "PUT /targets/{deviceId}", Handler: a.patching(a.putTarget)},
		{Pattern: "GET /targets", Handler: a.patching(a.listTargets)},
		{Pattern: "GET /targets/{deviceId}", Handler: a.patching(a.getTarget)},
		{Pattern: "DELETE /targets/{deviceId}", Handler: a.patching(a.deleteTarget)},
		{Pattern: "POST /targets/{deviceId}/probe", Handler: a.patching(a.probeTarget)},
		{Pattern: "POST /patchTasks", Handler: a.patching(a.createPatchTask)},
		{Pattern: "GET /patchTasks/{id}", Handler: a.patching(a.getPatchTask)},
		{Pattern: "GET /patchTasks/{id}/patches", Handler: a.patching(a.listPatchTaskPatches)},
		{Pattern: "GET /patches/{id}", Handler: a.patching(a.getPatch)},
		{Pattern: "PATCH /patches/{id}", Handler: a.patching(a.retryPatch)},
		{Pattern: "POST /patches/{id}", Handler: a.patching(a.retryPatch)},
		{Pattern: "DELETE /patches/{id}", Handler: a.patching(a.deletePatch)},
		{Pattern: "POST /patches/{id}/cancel", Handler: a.patching(a.cancelPatch)},
		{Pattern: "GET /patches/{id}/steps", Handler: a.patching(a.getPatchSteps)},
		{Pattern: "GET /patches/{id}/logs", Handler: a.patching(a.getPatchLogs), Raw: true},
		{Pattern: "GET /devices/{name}/patches", Handler: a.patching(a.listDevicePatches)},
		{Pattern: "POST /activations", Handler: a.activationsGone},
		{Pattern: "GET /activations/{activationId}", Handler: a.activationsGone},
		{Pattern: "DELETE /activations/{activationId}", Handler: a.activationsGone},

		// Fleet summary (spec §2.6, §6).
		{Pattern: "GET /fleet/summary", Handler: a.fleetSummary},
		{Pattern: "GET /fleet/cores", Handler: a.fleetCores},

		// Events as server-sent events (DESIGN.md, Events).
		{Pattern: "GET /events", Handler: a.events, Raw: true},

		// The API's own description, and Prometheus metrics.
		{Pattern: "GET /openapi.yaml", Handler: a.openAPI, Open: true, Raw: true},
		{Pattern: "GET /metrics", Handler: a.metrics, Raw: true},

		// What a fresh device needs: the installer and the ggagent builds (open).
		{Pattern: "GET /install.sh", Handler: dl.installScript, Open: true, Raw: true},
		{Pattern: "GET /downloads/ggagent/{os}/{arch}", Handler: dl.agent, Open: true, Raw: true},
	}
}
