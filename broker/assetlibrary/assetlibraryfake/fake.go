// Package assetlibraryfake is an HTTP-level fake of the three CDF Asset
// Library endpoints ggfleet calls to expand deployment targets:
// GET /bulkdevices, GET /groups/{groupPath}/members/devices and GET /search
// (DESIGN.md, "Testing is real": what cannot run here is faked at the
// protocol level). Anything else is a 404 with a JSON body. It keeps seeded
// devices and groups, honours offset/count paging, records every request,
// checks the Accept header as the Asset Library does, and can be told to
// fail the next requests (to test retries and rejections).
package assetlibraryfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Media types the Asset Library serves; any other Accept gets 415.
var mediaTypes = []string{"application/vnd.aws-cdf-v1.0+json", "application/vnd.aws-cdf-v2.0+json"}

// Device is a seeded Asset Library device.
type Device struct {
	DeviceID       string
	TemplateID     string // "device" when empty
	AwsIotThingArn string // empty: the device has no thing
	// Groups are the paths of the groups the device is a direct member of.
	Groups     []string
	Attributes map[string]string
}

// Group is a seeded Asset Library group.
type Group struct {
	GroupPath  string // "/site/a"
	TemplateID string // "group" when empty
	Attributes map[string]string
}

// Request is one recorded request.
type Request struct {
	Method  string
	Path    string // escaped, as sent
	Query   url.Values
	Headers http.Header
}

type failure struct {
	status  int
	message string
}

// Fake is a running fake Asset Library.
type Fake struct {
	// URL is the base URL to configure the client with.
	URL string

	srv      *httptest.Server
	mu       sync.Mutex
	devices  map[string]Device
	groups   map[string]Group
	requests []Request
	failures []failure
}

// New starts a fake, closed when the test ends.
func New(t testing.TB) *Fake {
	t.Helper()
	f := &Fake{devices: map[string]Device{}, groups: map[string]Group{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bulkdevices", f.bulkDevices)
	mux.HandleFunc("GET /groups/{groupPath}/members/devices", f.groupDevices)
	mux.HandleFunc("GET /search", f.search)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "Not found: "+r.Method+" "+r.URL.EscapedPath())
	})
	f.srv = httptest.NewServer(f.gate(mux))
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

// AddDevice seeds a device (replacing one with the same id).
func (f *Fake) AddDevice(d Device) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.devices[d.DeviceID] = d
}

// AddGroup seeds a group (replacing one with the same path).
func (f *Fake) AddGroup(g Group) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.groups[g.GroupPath] = g
}

// Fail makes the next n requests answer status with {"error": message}.
func (f *Fake) Fail(n, status int, message string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.failures = append(f.failures, failure{status, message})
	}
}

// Requests returns the requests received so far, failed ones included.
func (f *Fake) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// gate records the request, applies injected failures and the Accept check.
func (f *Fake) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, Request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.Query(), Headers: r.Header.Clone()})
		var fail *failure
		if len(f.failures) > 0 {
			fail = &f.failures[0]
			f.failures = f.failures[1:]
		}
		f.mu.Unlock()
		if fail != nil {
			writeError(w, fail.status, fail.message)
			return
		}
		if !slices.Contains(mediaTypes, r.Header.Get("Accept")) {
			w.WriteHeader(http.StatusUnsupportedMediaType)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (f *Fake) bulkDevices(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query().Get("deviceIds")
	if raw == "" {
		writeError(w, http.StatusBadRequest, "Missing required query parameter `deviceId`.")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []any{}
	seen := map[string]bool{}
	for _, id := range strings.Split(raw, ",") {
		d, ok := f.devices[id]
		if id == "" || seen[id] || !ok {
			continue
		}
		seen[id] = true
		out = append(out, f.deviceJSON(d, r.URL.Query().Get("includeGroups") != "false"))
	}
	writeJSON(w, r, map[string]any{"results": out})
}

func (f *Fake) groupDevices(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("groupPath")
	offset, count, ok := paging(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.groups[path]; !ok {
		writeError(w, http.StatusNotFound, "Group '"+path+"' not found")
		return
	}
	var members []any
	for _, id := range f.sortedDeviceIDs() {
		if d := f.devices[id]; slices.Contains(d.Groups, path) {
			members = append(members, f.deviceJSON(d, true))
		}
	}
	writeJSON(w, r, page(members, offset, count))
}

func (f *Fake) search(w http.ResponseWriter, r *http.Request) {
	offset, count, ok := paging(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	var preds []func(entity) bool
	for _, op := range []string{"eq", "neq", "startsWith", "endsWith", "contains", "exist", "nexist", "lt", "lte", "gt", "gte"} {
		for _, raw := range q[op] {
			p, err := predicate(op, raw)
			if err != nil {
				writeError(w, http.StatusBadRequest, err.Error())
				return
			}
			preds = append(preds, p)
		}
	}
	types, ntypes, ancestor := q["type"], q["ntype"], q.Get("ancestorPath")
	includeAncestor := q.Get("includeAncestor") == "true"

	f.mu.Lock()
	defer f.mu.Unlock()
	var all []entity
	paths := make([]string, 0, len(f.groups))
	for p := range f.groups {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		all = append(all, f.groupEntity(f.groups[p]))
	}
	for _, id := range f.sortedDeviceIDs() {
		all = append(all, f.deviceEntity(f.devices[id]))
	}
	var hits []any
	for _, e := range all {
		if len(types) > 0 && !slices.Contains(types, e.category) && !slices.Contains(types, e.fields["templateId"]) {
			continue
		}
		if slices.Contains(ntypes, e.category) || slices.Contains(ntypes, e.fields["templateId"]) {
			continue
		}
		if ancestor != "" && !e.under(ancestor, includeAncestor) {
			continue
		}
		match := true
		for _, p := range preds {
			match = match && p(e)
		}
		if match {
			hits = append(hits, e.json)
		}
	}
	writeJSON(w, r, page(hits, offset, count))
}

// entity is a device or group as search sees it.
type entity struct {
	category string
	fields   map[string]string // built-in and custom attributes
	ancestry []string          // groups the entity is in or under
	json     any
}

func (e entity) under(ancestor string, include bool) bool {
	if include && e.fields["groupPath"] == ancestor {
		return true
	}
	for _, a := range e.ancestry {
		if a == ancestor || strings.HasPrefix(a, strings.TrimSuffix(ancestor, "/")+"/") {
			return true
		}
	}
	return false
}

func (f *Fake) deviceEntity(d Device) entity {
	fields := map[string]string{"deviceId": d.DeviceID, "templateId": d.tmpl(), "awsIotThingArn": d.AwsIotThingArn}
	for k, v := range d.Attributes {
		fields[k] = v
	}
	return entity{category: "device", fields: fields, ancestry: d.Groups, json: f.deviceJSON(d, true)}
}

func (f *Fake) groupEntity(g Group) entity {
	fields := map[string]string{"groupPath": g.GroupPath, "templateId": g.tmpl(), "name": name(g.GroupPath)}
	for k, v := range g.Attributes {
		fields[k] = v
	}
	parent := parentPath(g.GroupPath)
	return entity{category: "group", fields: fields, ancestry: []string{parent}, json: map[string]any{
		"groupPath": g.GroupPath, "category": "group", "templateId": g.tmpl(), "name": name(g.GroupPath),
		"parentPath": parent, "attributes": nonNil(g.Attributes),
	}}
}

// predicate parses one filter parameter, "field:value" with the value
// escaped as encodeURIComponent does. Traversals are not modelled.
func predicate(op, raw string) (func(entity) bool, error) {
	parts := strings.Split(raw, ":")
	if len(parts) != 2 {
		return nil, fmt.Errorf("fake asset library: filter %s=%q: only field:value filters are supported, not traversals", op, raw)
	}
	field := parts[0]
	value, err := url.PathUnescape(parts[1])
	if err != nil {
		return nil, fmt.Errorf("filter %s=%q: %v", op, raw, err)
	}
	num := func(s string) (float64, bool) {
		n, err := strconv.ParseFloat(s, 64)
		return n, err == nil
	}
	return func(e entity) bool {
		got, has := e.fields[field]
		has = has && got != ""
		switch op {
		case "eq":
			return has && got == value
		case "neq":
			return !has || got != value
		case "startsWith":
			return has && strings.HasPrefix(got, value)
		case "endsWith":
			return has && strings.HasSuffix(got, value)
		case "contains":
			return has && strings.Contains(got, value)
		case "exist":
			return has && (value == "" || got == value)
		case "nexist":
			return !has || (value != "" && got != value)
		}
		a, okA := num(got)
		b, okB := num(value)
		if !has || !okA || !okB {
			return false
		}
		switch op {
		case "lt":
			return a < b
		case "lte":
			return a <= b
		case "gt":
			return a > b
		}
		return a >= b
	}, nil
}

func (f *Fake) deviceJSON(d Device, includeGroups bool) map[string]any {
	m := map[string]any{
		"deviceId": d.DeviceID, "category": "device", "templateId": d.tmpl(), "state": "active",
		"attributes": nonNil(d.Attributes),
	}
	if d.AwsIotThingArn != "" {
		m["awsIotThingArn"] = d.AwsIotThingArn
	}
	if includeGroups && len(d.Groups) > 0 {
		m["groups"] = map[string]any{"out": map[string][]string{"located_at": d.Groups}}
	}
	return m
}

func (f *Fake) sortedDeviceIDs() []string {
	ids := make([]string, 0, len(f.devices))
	for id := range f.devices {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (d Device) tmpl() string {
	if d.TemplateID == "" {
		return "device"
	}
	return d.TemplateID
}

func (g Group) tmpl() string {
	if g.TemplateID == "" {
		return "group"
	}
	return g.TemplateID
}

func name(path string) string { return path[strings.LastIndex(path, "/")+1:] }

func parentPath(path string) string {
	i := strings.LastIndex(path, "/")
	if i <= 0 {
		return "/"
	}
	return path[:i]
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// paging reads offset (default 0) and count (default 500, as the Asset
// Library's), answering 400 when they are not whole numbers.
func paging(w http.ResponseWriter, r *http.Request) (offset, count int, ok bool) {
	offset, count = 0, 500
	for name, dst := range map[string]*int{"offset": &offset, "count": &count} {
		if raw := r.URL.Query().Get(name); raw != "" {
			n, err := strconv.Atoi(raw)
			if err != nil || n < 0 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("%s must be a whole number, got %q", name, raw))
				return 0, 0, false
			}
			*dst = n
		}
	}
	return offset, count, true
}

func page(items []any, offset, count int) map[string]any {
	start := min(offset, len(items))
	end := min(start+count, len(items))
	results := items[start:end]
	if results == nil {
		results = []any{}
	}
	return map[string]any{"results": results, "pagination": map[string]int{"offset": offset, "count": count}}
}

func writeJSON(w http.ResponseWriter, r *http.Request, v any) {
	w.Header().Set("Content-Type", r.Header.Get("Accept"))
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
