package assetlibrary

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// SearchRequest is the Asset Library SearchRequest object a deployment task
// carries in targets.assetLibraryQuery (spec §2.5). Field names are the CDF
// ones; the query string uses the Asset Library's parameter names (types →
// type, ntypes → ntype).
type SearchRequest struct {
	Types           []string `json:"types,omitempty"`
	NTypes          []string `json:"ntypes,omitempty"`
	AncestorPath    string   `json:"ancestorPath,omitempty"`
	IncludeAncestor bool     `json:"includeAncestor,omitempty"`

	Eq         []Filter `json:"eq,omitempty"`
	Neq        []Filter `json:"neq,omitempty"`
	Lt         []Filter `json:"lt,omitempty"`
	Lte        []Filter `json:"lte,omitempty"`
	Gt         []Filter `json:"gt,omitempty"`
	Gte        []Filter `json:"gte,omitempty"`
	StartsWith []Filter `json:"startsWith,omitempty"`
	EndsWith   []Filter `json:"endsWith,omitempty"`
	Contains   []Filter `json:"contains,omitempty"`
	Exist      []Filter `json:"exist,omitempty"`
	NExist     []Filter `json:"nexist,omitempty"`

	// FacetField and Summarize are part of the CDF object, but they make the
	// Asset Library answer counts instead of devices, so a query that sets
	// them cannot select deployment targets and is rejected.
	FacetField *Facet `json:"facetField,omitempty"`
	Summarize  bool   `json:"summarize,omitempty"`
	// Sort is passed through ("attribute:asc").
	Sort string `json:"sort,omitempty"`
}

// Filter compares a field of a device or group, or of an entity reached by
// following Traversals, with Value (a string, number or boolean).
type Filter struct {
	Traversals []Traversal     `json:"traversals,omitempty"`
	Field      string          `json:"field"`
	Value      json.RawMessage `json:"value"`
}

// Traversal follows a relation in a direction ("in" or "out").
type Traversal struct {
	Relation  string `json:"relation"`
	Direction string `json:"direction"`
}

// Facet is the CDF facet request (rejected here, see SearchRequest).
type Facet struct {
	Traversals []Traversal `json:"traversals,omitempty"`
	Field      string      `json:"field"`
}

// ParseQuery decodes and checks a targets.assetLibraryQuery object. Its
// errors are errkind.Invalid with a message that names the field at fault,
// so a deployment task can be refused (400) before it is accepted.
// Unknown fields are refused: a misspelt filter would widen the query.
func ParseQuery(raw json.RawMessage) (SearchRequest, error) {
	var sr SearchRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sr); err != nil {
		return sr, errkind.New(errkind.Invalid, "targets.assetLibraryQuery is not a valid Asset Library search request (%v); its fields are types, ntypes, ancestorPath, includeAncestor, eq, neq, lt, lte, gt, gte, startsWith, endsWith, contains, exist, nexist and sort", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return sr, errkind.New(errkind.Invalid, "targets.assetLibraryQuery: unexpected data after the object")
	}
	if _, err := sr.queryString(); err != nil {
		return sr, err
	}
	return sr, nil
}

// queryString encodes the request as the Asset Library's /search query
// (without offset and count). Filters are "field:value" or
// "relation:direction:…:field:value", the value escaped once before the whole
// parameter is escaped again, as the Asset Library expects.
func (sr SearchRequest) queryString() (url.Values, error) {
	if sr.FacetField != nil {
		return nil, errkind.New(errkind.Invalid, "targets.assetLibraryQuery.facetField cannot select deployment targets (the Asset Library answers counts): remove it")
	}
	if sr.Summarize {
		return nil, errkind.New(errkind.Invalid, "targets.assetLibraryQuery.summarize cannot select deployment targets (the Asset Library answers a total): remove it")
	}
	q := url.Values{}
	for _, t := range sr.Types {
		if t == "" {
			return nil, errkind.New(errkind.Invalid, "targets.assetLibraryQuery.types has an empty entry")
		}
		q.Add("type", t)
	}
	for _, t := range sr.NTypes {
		if t == "" {
			return nil, errkind.New(errkind.Invalid, "targets.assetLibraryQuery.ntypes has an empty entry")
		}
		q.Add("ntype", t)
	}
	if sr.AncestorPath != "" {
		q.Set("ancestorPath", sr.AncestorPath)
	}
	if sr.IncludeAncestor {
		q.Set("includeAncestor", "true")
	}
	ops := []struct {
		name    string
		filters []Filter
	}{
		{"eq", sr.Eq}, {"neq", sr.Neq}, {"lt", sr.Lt}, {"lte", sr.Lte}, {"gt", sr.Gt}, {"gte", sr.Gte},
		{"startsWith", sr.StartsWith}, {"endsWith", sr.EndsWith}, {"contains", sr.Contains},
		{"exist", sr.Exist}, {"nexist", sr.NExist},
	}
	for _, op := range ops {
		for i, f := range op.filters {
			v, err := f.encode()
			if err != nil {
				return nil, errkind.New(errkind.Invalid, "targets.assetLibraryQuery.%s[%d] is not valid: %v", op.name, i, err)
			}
			q.Add(op.name, v)
		}
	}
	if len(q) == 0 {
		return nil, errkind.New(errkind.Invalid, "targets.assetLibraryQuery has no criteria: give types, ancestorPath or a filter (an empty query would select every device)")
	}
	if sr.Sort != "" {
		q.Set("sort", sr.Sort)
	}
	return q, nil
}

// encode returns "relation:direction:…:field:<encodeURIComponent(value)>".
func (f Filter) encode() (string, error) {
	var parts []string
	for _, t := range f.Traversals {
		if t.Relation == "" || strings.Contains(t.Relation, ":") {
			return "", fmt.Errorf("a traversal needs a relation without ':', got %q", t.Relation)
		}
		if t.Direction != "in" && t.Direction != "out" {
			return "", fmt.Errorf("a traversal's direction is \"in\" or \"out\", got %q", t.Direction)
		}
		parts = append(parts, t.Relation, t.Direction)
	}
	if f.Field == "" || strings.Contains(f.Field, ":") {
		return "", fmt.Errorf("field must be a name without ':', got %q", f.Field)
	}
	v, err := scalar(f.Value)
	if err != nil {
		return "", err
	}
	parts = append(parts, f.Field, encodeURIComponent(v))
	return strings.Join(parts, ":"), nil
}

// scalar renders a JSON string, number or boolean as JavaScript's
// template literal would.
func scalar(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", errors.New("value is missing")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("value: %w", err)
		}
		return s, nil
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return "", fmt.Errorf("value: %w", err)
		}
		return strconv.FormatBool(b), nil
	case 'n':
		return "", errors.New("value must be a string, number or boolean, not null")
	case '{', '[':
		return "", errors.New("value must be a string, number or boolean, not an object or array")
	}
	var n float64
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", fmt.Errorf("value: %w", err)
	}
	return strconv.FormatFloat(n, 'f', -1, 64), nil
}
