package httpapi

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provisioning"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// ProvisioningTemplateService stores provisioning templates (the raw AWS IoT
// provisioning template documents with their CDF section).
// *provisioning.Service implements it.
type ProvisioningTemplateService interface {
	Put(ctx context.Context, name string, doc []byte) (created bool, err error)
	Get(ctx context.Context, name string) ([]byte, error)
	List(ctx context.Context) ([]provisioning.TemplateInfo, error)
	Delete(ctx context.Context, name string) error
}

// provisioningTemplateInfo is one entry of GET /provisioningTemplates.
type provisioningTemplateInfo struct {
	Name      string   `json:"name"`
	CreatedAt cdf.Time `json:"createdAt"`
	UpdatedAt cdf.Time `json:"updatedAt"`
}

func (a *API) putProvisioningTemplate(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != cdf.MediaType && mt != "application/json") {
			a.writeError(w, r, errkind.New(errkind.Invalid, "unsupported Content-Type %q: send the template as %s or application/json", ct, cdf.MediaType))
			return
		}
	}
	doc, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) {
			err = errkind.Wrap(errkind.Invalid, err, "could not read the request body")
		}
		a.writeError(w, r, err)
		return
	}
	if len(doc) == 0 {
		a.writeError(w, r, errkind.New(errkind.Invalid, "the request body is empty: send the provisioning template document"))
		return
	}
	created, err := a.d.Provisioning.Put(r.Context(), name, doc)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/provisioningTemplates/"+name)
	if created {
		w.WriteHeader(http.StatusCreated)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) listProvisioningTemplates(w http.ResponseWriter, r *http.Request) {
	list, err := a.d.Provisioning.List(r.Context())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := make([]provisioningTemplateInfo, 0, len(list))
	for _, t := range list {
		out = append(out, provisioningTemplateInfo{Name: t.Name, CreatedAt: cdf.At(t.CreatedAt), UpdatedAt: cdf.At(t.UpdatedAt)}) // zero stays null
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"provisioningTemplates": out})
}

func (a *API) getProvisioningTemplate(w http.ResponseWriter, r *http.Request) {
	doc, err := a.d.Provisioning.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", responseType(r))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(doc)
}

func (a *API) deleteProvisioningTemplate(w http.ResponseWriter, r *http.Request) {
	if err := a.d.Provisioning.Delete(r.Context(), r.PathValue("name")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
