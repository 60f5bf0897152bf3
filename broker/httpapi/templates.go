package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/templates"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// TemplateService is the component template service (broker/templates.Service).
type TemplateService interface {
	Create(ctx context.Context, in cdf.EditableTemplate) (cdf.Template, error)
	Update(ctx context.Context, name string, in cdf.EditableTemplate) (cdf.Template, error)
	Get(ctx context.Context, name string) (cdf.Template, error)
	// GetVersion takes a version number or the literal "current".
	GetVersion(ctx context.Context, name, version string) (cdf.Template, error)
	List(ctx context.Context, count int, after string) ([]cdf.Template, bool, error)
	ListVersions(ctx context.Context, name string, count int, after string) ([]cdf.Template, bool, error)
	Delete(ctx context.Context, name string) error
}

// decodeTemplate decodes and validates the body of POST /templates and PUT
// /templates/{name}. A non-empty pathName replaces the body's name.
func decodeTemplate(body []byte, pathName string) (cdf.EditableTemplate, error) {
	var in cdf.EditableTemplate
	if err := DecodeBody(body, &in); err != nil {
		if msg := numericComponentVersion(body); msg != "" {
			return in, errkind.New(errkind.Invalid, "%s", msg)
		}
		return in, err
	}
	if pathName != "" {
		in.Name = pathName
	}
	if err := templates.Validate(in); err != nil {
		return in, err
	}
	return in, nil
}

// numericComponentVersion explains the common mistake of writing a
// component version as a JSON number, naming the component; "" if that is
// not the problem.
func numericComponentVersion(body []byte) string {
	var probe struct {
		Components []struct {
			Key     any             `json:"key"`
			Version json.RawMessage `json:"version"`
		} `json:"components"`
	}
	if json.Unmarshal(body, &probe) != nil {
		return ""
	}
	for i, c := range probe.Components {
		v := strings.TrimSpace(string(c.Version))
		if v == "" || v == "null" || v[0] == '"' {
			continue
		}
		if v[0] == '-' || (v[0] >= '0' && v[0] <= '9') {
			key, _ := c.Key.(string)
			return "components[" + strconv.Itoa(i) + "].version of component " + strconv.Quote(key) +
				" must be a JSON string such as \"1.0.0\", not the number " + v + ": put the version in quotes"
		}
	}
	return ""
}

// readTemplate reads and decodes a template request body.
func readTemplate(r *http.Request, pathName string) (cdf.EditableTemplate, error) {
	var raw json.RawMessage
	if err := decodeJSON(r, &raw); err != nil {
		return cdf.EditableTemplate{}, err
	}
	return decodeTemplate(raw, pathName)
}

func templateLocation(w http.ResponseWriter, t cdf.Template) {
	w.Header().Set("Location", "/templates/"+t.Name)
	w.Header().Set("X-Name", t.Name)
	w.Header().Set("X-Version", strconv.Itoa(t.Version))
}

func (a *API) createTemplate(w http.ResponseWriter, r *http.Request) {
	in, err := readTemplate(r, "")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	t, err := a.d.Templates.Create(r.Context(), in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	templateLocation(w, t)
	w.WriteHeader(http.StatusCreated)
}

func (a *API) updateTemplate(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := templates.CheckName(name); err != nil {
		a.writeError(w, r, err)
		return
	}
	in, err := readTemplate(r, name)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	t, err := a.d.Templates.Update(r.Context(), name, in)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	templateLocation(w, t)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) getTemplate(w http.ResponseWriter, r *http.Request) {
	t, err := a.d.Templates.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, t)
}

func (a *API) getTemplateVersion(w http.ResponseWriter, r *http.Request) {
	t, err := a.d.Templates.GetVersion(r.Context(), r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, r, http.StatusOK, t)
}

func (a *API) deleteTemplate(w http.ResponseWriter, r *http.Request) {
	if err := a.d.Templates.Delete(r.Context(), r.PathValue("name")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) listTemplates(w http.ResponseWriter, r *http.Request) {
	page, err := parsePage(r, "exclusiveStartName")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	list, more, err := a.d.Templates.List(r.Context(), page.Count, page.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var last any
	if len(list) > 0 {
		last = list[len(list)-1].Name
	}
	writeJSON(w, r, http.StatusOK, cdf.TemplateList{
		Templates:  nonNilTemplates(list),
		Pagination: page.pagination(more && last != nil, "name", last, false),
	})
}

func (a *API) listTemplateVersions(w http.ResponseWriter, r *http.Request) {
	page, err := parsePage(r, "exclusiveStartVersion")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	list, more, err := a.d.Templates.ListVersions(r.Context(), r.PathValue("name"), page.Count, page.After)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var last any
	if len(list) > 0 {
		last = list[len(list)-1].Version
	}
	writeJSON(w, r, http.StatusOK, cdf.TemplateList{
		Templates:  nonNilTemplates(list),
		Pagination: page.pagination(more && last != nil, "version", last, false),
	})
}

// nonNilTemplates makes an empty list encode as [] rather than null.
func nonNilTemplates(list []cdf.Template) []cdf.Template {
	if list == nil {
		return []cdf.Template{}
	}
	return list
}
