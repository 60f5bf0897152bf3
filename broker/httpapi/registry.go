package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// RegistryService is the registry view and policy store behind
// /registry/...; *local.Provider satisfies it (and so does any
// provider.Provider).
type RegistryService interface {
	DescribeThing(ctx context.Context, name string) (provider.Thing, error)
	ListClientDevices(ctx context.Context, core string) ([]provider.Association, error)
	PutPolicy(ctx context.Context, name, document string) (created bool, err error)
}

// thingView is the body of GET /registry/things/{name}.
type thingView struct {
	ThingName   string            `json:"thingName"`
	ThingGroups []string          `json:"thingGroups"`
	Attributes  map[string]string `json:"attributes"`
	Principals  []string          `json:"principals"`
	Policies    []string          `json:"policies"`
}

// associationView is one entry of GET /registry/coreDevices/{name}/associatedClientDevices.
type associationView struct {
	ThingName            string   `json:"thingName"`
	AssociationTimestamp cdf.Time `json:"associationTimestamp"`
}

// nonNil returns s, or an empty slice so JSON shows [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (a *API) getThing(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName("thing name", name); err != nil {
		a.writeError(w, r, err)
		return
	}
	th, err := a.d.Registry.DescribeThing(r.Context(), name)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	attrs := th.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	writeJSON(w, r, http.StatusOK, thingView{
		ThingName:   th.Name,
		ThingGroups: nonNil(th.Groups),
		Attributes:  attrs,
		Principals:  nonNil(th.Principals),
		Policies:    nonNil(th.Policies),
	})
}

func (a *API) listAssociatedClientDevices(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName("core name", name); err != nil {
		a.writeError(w, r, err)
		return
	}
	list, err := a.d.Registry.ListClientDevices(r.Context(), name)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := make([]associationView, 0, len(list))
	for _, as := range list {
		out = append(out, associationView{ThingName: as.ThingName, AssociationTimestamp: cdf.At(as.AssociatedAt)})
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"associatedClientDevices": out})
}

// policyNameRE is AWS IoT's policy-name pattern.
var policyNameRE = regexp.MustCompile(`^[\w+=,.@-]{1,128}$`)

func (a *API) putPolicy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !policyNameRE.MatchString(name) {
		a.writeError(w, r, errkind.New(errkind.Invalid,
			"policy name %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9 and _ + = , . @ -", name))
		return
	}
	body, err := readPolicyDocument(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	created, err := a.d.Registry.PutPolicy(r.Context(), name, body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if created {
		w.Header().Set("Location", strings.TrimSuffix(a.d.BaseURL, "/")+"/registry/policies/"+name)
		w.WriteHeader(http.StatusCreated)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// readPolicyDocument reads the request body, which must be a JSON object
// (an AWS IoT policy document); the text is kept as sent.
func readPolicyDocument(r *http.Request) (string, error) {
	const want = "the body must be an AWS IoT policy document: a JSON object such as {\"Version\":\"2012-10-17\",\"Statement\":[...]}"
	var raw json.RawMessage
	if err := decodeJSON(r, &raw); err != nil {
		if errkind.Is(err, errkind.Invalid) {
			return "", errkind.New(errkind.Invalid, "%s; %s", want, errkind.Message(err))
		}
		return "", err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return "", errkind.New(errkind.Invalid, "%s, not %s", want, jsonKind(raw))
	}
	return string(raw), nil
}

// jsonKind names the kind of a JSON value for messages.
func jsonKind(raw json.RawMessage) string {
	switch t := strings.TrimSpace(string(raw)); {
	case strings.HasPrefix(t, "["):
		return "an array"
	case strings.HasPrefix(t, `"`):
		return "a string"
	case t == "null":
		return "null"
	case t == "true" || t == "false":
		return "a boolean"
	}
	return "a number"
}
