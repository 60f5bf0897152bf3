package httpapi

import (
	"context"
	"net/http"

	"github.com/ggfleet/ggfleet/broker/ca"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// CAService lists, imports and generates the broker's certificate
// authorities. *ca.Authority implements it.
type CAService interface {
	List(ctx context.Context) ([]ca.CA, error)
	Import(ctx context.Context, certPEM, keyPEM string) (ca.CA, error)
	Generate(ctx context.Context, commonName string, days int, keyAlg string) (ca.CA, error)
}

var _ CAService = (*ca.Authority)(nil)

// caResource is a certificate authority on the wire.
type caResource struct {
	CAID           string   `json:"caId"`
	Subject        string   `json:"subject"`
	NotAfter       cdf.Time `json:"notAfter"`
	Default        bool     `json:"default"`
	KeyAlgorithm   string   `json:"keyAlgorithm"`
	CertificatePem string   `json:"certificatePem"`
}

func toCAResource(c ca.CA) caResource {
	return caResource{
		CAID:           c.ID,
		Subject:        c.Subject,
		NotAfter:       cdf.At(c.NotAfter),
		Default:        c.Default,
		KeyAlgorithm:   c.KeyAlgorithm,
		CertificatePem: c.CertificatePem,
	}
}

// createCARequest is either an import ({certificatePem, privateKeyPem}) or
// a generation ({commonName, daysExpiry, keyAlgorithm}); pointers tell which
// members were sent.
type createCARequest struct {
	CertificatePem *string `json:"certificatePem"`
	PrivateKeyPem  *string `json:"privateKeyPem"`
	CommonName     *string `json:"commonName"`
	DaysExpiry     *int    `json:"daysExpiry"`
	KeyAlgorithm   *string `json:"keyAlgorithm"`
}

const caRequestForms = `send {"certificatePem","privateKeyPem"} to import a certificate authority, or {"commonName","daysExpiry","keyAlgorithm"} to generate one`

func (a *API) listCAs(w http.ResponseWriter, r *http.Request) {
	list, err := a.d.CAs.List(r.Context())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := make([]caResource, 0, len(list))
	for _, c := range list {
		out = append(out, toCAResource(c))
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"certificateAuthorities": out})
}

func (a *API) createCA(w http.ResponseWriter, r *http.Request) {
	var req createCARequest
	if err := decodeJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	importing := req.CertificatePem != nil || req.PrivateKeyPem != nil
	generating := req.CommonName != nil || req.DaysExpiry != nil || req.KeyAlgorithm != nil
	var (
		created ca.CA
		err     error
	)
	deref := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	switch {
	case importing && generating:
		err = errkind.New(errkind.Invalid, "the request mixes import and generate members: %s, not both", caRequestForms)
	case importing:
		created, err = a.d.CAs.Import(r.Context(), deref(req.CertificatePem), deref(req.PrivateKeyPem))
	case generating:
		days := 0
		if req.DaysExpiry != nil {
			days = *req.DaysExpiry
			if days < 1 {
				err = errkind.New(errkind.Invalid, "daysExpiry must be a whole number of days of at least 1, got %d", days)
				break
			}
		}
		created, err = a.d.CAs.Generate(r.Context(), deref(req.CommonName), days, deref(req.KeyAlgorithm))
	default:
		err = errkind.New(errkind.Invalid, "the request names no certificate authority: %s", caRequestForms)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/certificateAuthorities/"+created.ID)
	writeJSON(w, r, http.StatusCreated, toCAResource(created))
}
