package awsfake

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// Core device statuses (Greengrass V2 CoreDeviceStatus enum).
const (
	CoreHealthy   = "HEALTHY"
	CoreUnhealthy = "UNHEALTHY"
)

type coreDevice struct {
	name, status string
	updated      time.Time
	clients      map[string]time.Time // thing name -> association time
	// installed are the components the core reports it runs, in order:
	// those of its last succeeded deployment, or SetInstalledComponents's.
	installed []InstalledComponent
}

// InstalledComponent is a component a core device runs.
type InstalledComponent struct {
	Name    string `json:"componentName"`
	Version string `json:"componentVersion"`
}

// maxBatchEntries is the Greengrass limit of entries per batch call.
const maxBatchEntries = 100

// RegisterCoreDevice registers a Greengrass core device, as AWS does when
// the nucleus first connects. The thing must exist; status is HEALTHY or
// UNHEALTHY. Registering again updates the status.
func (f *Fake) RegisterCoreDevice(name, status string) error {
	if status != CoreHealthy && status != CoreUnhealthy {
		return fmt.Errorf("core device status %q: use %s or %s", status, CoreHealthy, CoreUnhealthy)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.iot.things[name] == nil {
		return fmt.Errorf("register core device %q: no such thing (create it first)", name)
	}
	c := f.gg[name]
	if c == nil {
		c = &coreDevice{name: name, clients: map[string]time.Time{}}
		f.gg[name] = c
	}
	c.status, c.updated = status, time.Now()
	return nil
}

func validation(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, "ValidationException", format, args...)
}

func ggNotFound(name string) *apiError {
	e := errorf(http.StatusNotFound, "ResourceNotFoundException", "Core device %s not found", name)
	e.Extra = map[string]any{"resourceId": name, "resourceType": "coreDevice"}
	return e
}

func (f *Fake) routeGreengrass(mux *http.ServeMux) {
	h := func(pattern, op string, fn handlerFunc) { f.handle(mux, "greengrass", pattern, op, fn) }
	base := "/greengrass/v2/coreDevices/{coreDeviceThingName}"
	h("GET "+base, "GetCoreDevice", f.getCoreDevice)
	h("DELETE "+base, "DeleteCoreDevice", f.deleteCoreDevice)
	h("POST "+base+"/associateClientDevices", "BatchAssociateClientDeviceWithCoreDevice", f.batchClientDevices(true))
	h("POST "+base+"/disassociateClientDevices", "BatchDisassociateClientDeviceFromCoreDevice", f.batchClientDevices(false))
	h("GET "+base+"/associatedClientDevices", "ListClientDevicesAssociatedWithCoreDevice", f.listClientDevices)
	h("GET "+base+"/installedComponents", "ListInstalledComponents", f.listInstalledComponents)
	h("GET "+base+"/effectiveDeployments", "ListEffectiveDeployments", f.listEffectiveDeployments)
	h("GET /greengrass/v2/components/{arn}/metadata", "DescribeComponent", f.describeComponent)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, errorf(http.StatusNotFound, "UnknownOperationException", "the fake does not serve %s %s", r.Method, r.URL.Path))
	})
}

// coreName validates the coreDeviceThingName path member (length 1-128).
func coreName(r *http.Request) (string, *apiError) {
	n := r.PathValue("coreDeviceThingName")
	if len(n) < 1 || len(n) > 128 {
		return "", validation("coreDeviceThingName must have length between 1 and 128")
	}
	return n, nil
}

func (f *Fake) getCoreDevice(r *http.Request) (int, any, *apiError) {
	n, err := coreName(r)
	if err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.gg[n]
	if c == nil {
		return 0, nil, ggNotFound(n)
	}
	return http.StatusOK, map[string]any{
		"coreDeviceThingName": c.name, "status": c.status, "coreVersion": "2.14.0",
		"platform": "linux", "architecture": "amd64", "runtime": "aws_nucleus_classic",
		"lastStatusUpdateTimestamp": epoch(c.updated), "tags": map[string]string{},
	}, nil
}

func (f *Fake) deleteCoreDevice(r *http.Request) (int, any, *apiError) {
	n, err := coreName(r)
	if err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gg[n] == nil {
		return 0, nil, ggNotFound(n)
	}
	delete(f.gg, n)
	return http.StatusNoContent, nil, nil
}

func (f *Fake) batchClientDevices(associate bool) handlerFunc {
	return func(r *http.Request) (int, any, *apiError) {
		n, err := coreName(r)
		if err != nil {
			return 0, nil, err
		}
		var in struct {
			Entries []struct {
				ThingName *string `json:"thingName"`
			} `json:"entries"`
		}
		if err := decodeBody(r, &in); err != nil {
			return 0, nil, validation("%s", err.Message)
		}
		if len(in.Entries) > maxBatchEntries {
			return 0, nil, validation("entries must have at most %d items", maxBatchEntries)
		}
		for _, e := range in.Entries {
			if e.ThingName == nil {
				return 0, nil, validation("entries[].thingName is required")
			}
			if len(*e.ThingName) < 1 || len(*e.ThingName) > 128 {
				return 0, nil, validation("entries[].thingName must have length between 1 and 128")
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		c := f.gg[n]
		if c == nil {
			return 0, nil, ggNotFound(n)
		}
		errs := []map[string]string{}
		now := time.Now()
		for _, e := range in.Entries {
			name := *e.ThingName
			switch {
			case !associate:
				delete(c.clients, name)
			case f.iot.things[name] == nil:
				errs = append(errs, map[string]string{"thingName": name, "code": "ResourceNotFoundException", "message": "Thing " + name + " not found"})
			case c.clients[name].IsZero():
				c.clients[name] = now
			}
		}
		return http.StatusOK, map[string]any{"errorEntries": errs}, nil
	}
}

func (f *Fake) listClientDevices(r *http.Request) (int, any, *apiError) {
	n, err := coreName(r)
	if err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	if v := q.Get("maxResults"); v != "" {
		if m, err := strconv.Atoi(v); err != nil || m < 1 || m > 100 {
			return 0, nil, validation("maxResults must be between 1 and 100")
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.gg[n]
	if c == nil {
		return 0, nil, ggNotFound(n)
	}
	names := make([]string, 0, len(c.clients))
	for k := range c.clients {
		names = append(names, k)
	}
	sort.Strings(names)
	items, next, perr := page(names, q.Get("nextToken"), q.Get("maxResults"), 50, 100)
	if perr != nil {
		return 0, nil, validation("%s", perr.Message)
	}
	out := []map[string]any{}
	for _, name := range items {
		out = append(out, map[string]any{"thingName": name, "associationTimestamp": epoch(c.clients[name])})
	}
	return http.StatusOK, map[string]any{"associatedClientDevices": out, "nextToken": nilIfEmpty(next)}, nil
}

// SetInstalledComponents sets the components a registered core device
// reports it runs, as its nucleus would after a local deployment.
func (f *Fake) SetInstalledComponents(core string, components []InstalledComponent) error {
	for _, c := range components {
		if c.Name == "" || c.Version == "" {
			return fmt.Errorf("installed component %+v: give componentName and componentVersion", c)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.gg[core]
	if c == nil {
		return fmt.Errorf("set installed components of %q: not a registered core device", core)
	}
	c.installed = append([]InstalledComponent(nil), components...)
	c.updated = time.Now()
	return nil
}

// listQuery validates the maxResults and nextToken of a Greengrass list call.
func listQuery(r *http.Request) (maxResults, token string, err *apiError) {
	q := r.URL.Query()
	maxResults = q.Get("maxResults")
	if maxResults != "" {
		if m, err := strconv.Atoi(maxResults); err != nil || m < 1 || m > 100 {
			return "", "", validation("1 validation error detected: Value '%s' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 100", maxResults)
		}
	}
	return maxResults, q.Get("nextToken"), nil
}

func (f *Fake) listInstalledComponents(r *http.Request) (int, any, *apiError) {
	n, err := coreName(r)
	if err != nil {
		return 0, nil, err
	}
	size, token, err := listQuery(r)
	if err != nil {
		return 0, nil, err
	}
	if tf := r.URL.Query().Get("topologyFilter"); tf != "" && tf != "ALL" && tf != "ROOT" {
		return 0, nil, validation("1 validation error detected: Value '%s' at 'topologyFilter' failed to satisfy constraint: Member must satisfy enum value set: [ALL, ROOT]", tf)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.gg[n]
	if c == nil {
		return 0, nil, ggNotFound(n)
	}
	idx := make([]string, len(c.installed))
	for i := range c.installed {
		idx[i] = strconv.Itoa(i)
	}
	items, next, perr := page(idx, token, size, 50, 100)
	if perr != nil {
		return 0, nil, validation("%s", perr.Message)
	}
	out := []map[string]any{}
	for _, i := range items {
		k, _ := strconv.Atoi(i)
		ic := c.installed[k]
		out = append(out, map[string]any{"componentName": ic.Name, "componentVersion": ic.Version, "lifecycleState": "RUNNING",
			"isRoot": true, "lastStatusChangeTimestamp": epoch(c.updated), "lastReportedTimestamp": epoch(c.updated)})
	}
	return http.StatusOK, map[string]any{"installedComponents": out, "nextToken": nilIfEmpty(next)}, nil
}
