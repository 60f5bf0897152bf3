package httpapi

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/enroll"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// EnrollmentService makes one-time enrollment tokens and enrolls cores
// (broker/enroll.Service satisfies it).
type EnrollmentService interface {
	// CreateToken makes a token for an existing core (errkind.NotFound
	// otherwise), valid for expiresIn (0 = the default, 24 hours).
	CreateToken(ctx context.Context, core string, expiresIn time.Duration) (enroll.Token, error)
	// Enroll spends a token and certifies the CSR's key; errkind.Invalid for
	// bad input, errkind.Unauthorized for a bad, used or expired token.
	Enroll(ctx context.Context, req enroll.Request) (enroll.Response, error)
}

// enrollmentTokenRequest is the body of POST /cores/{name}/enrollmentTokens.
type enrollmentTokenRequest struct {
	ExpiresInSeconds *int64 `json:"expiresInSeconds"`
}

// enrollmentTokenResponse is the 201 answer; the token is shown only here.
type enrollmentTokenResponse struct {
	Token     string   `json:"token"`
	CoreName  string   `json:"coreName"`
	ExpiresAt cdf.Time `json:"expiresAt"`
}

func (a *API) createEnrollmentToken(w http.ResponseWriter, r *http.Request) {
	if a.d.Enrollment == nil {
		writeMessage(w, r, http.StatusNotImplemented, "enrollment is not configured on this broker")
		return
	}
	name := r.PathValue("name")
	if err := checkName("core name", name); err != nil {
		a.writeError(w, r, err)
		return
	}
	expiresIn, err := decodeEnrollmentTokenRequest(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	tok, err := a.d.Enrollment.CreateToken(r.Context(), name, expiresIn)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, r, http.StatusCreated, enrollmentTokenResponse{Token: tok.Token, CoreName: tok.CoreName, ExpiresAt: cdf.At(tok.ExpiresAt)})
}

// decodeEnrollmentTokenRequest reads the optional body of a token request
// and returns the requested lifetime (0 = the default).
func decodeEnrollmentTokenRequest(r *http.Request) (time.Duration, error) {
	var req enrollmentTokenRequest
	if err := decodeOptionalJSON(r, &req); err != nil {
		return 0, err
	}
	return tokenLifetime(req)
}

// decodeOptionalJSON is decodeJSON for endpoints whose body may be empty;
// an empty body leaves v unchanged.
func decodeOptionalJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != cdf.MediaType && mt != "application/json") {
			return errkind.New(errkind.Invalid, "unsupported Content-Type %q: send %s or application/json", ct, cdf.MediaType)
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errkind.Wrap(errkind.Invalid, err, "could not read the request body")
	}
	if strings.TrimSpace(string(body)) == "" {
		return nil
	}
	return DecodeBody(body, v)
}

// tokenLifetime validates expiresInSeconds; absent means the default.
func tokenLifetime(req enrollmentTokenRequest) (time.Duration, error) {
	if req.ExpiresInSeconds == nil {
		return 0, nil
	}
	minS, maxS := int64(enroll.MinTokenLifetime/time.Second), int64(enroll.MaxTokenLifetime/time.Second)
	if v := *req.ExpiresInSeconds; v < minS || v > maxS {
		return 0, errkind.New(errkind.Invalid, "expiresInSeconds must be from %d to %d (30 days), got %d", minS, maxS, v)
	}
	return time.Duration(*req.ExpiresInSeconds) * time.Second, nil
}

func (a *API) enroll(w http.ResponseWriter, r *http.Request) {
	if a.d.Enrollment == nil {
		writeMessage(w, r, http.StatusNotImplemented, "enrollment is not configured on this broker")
		return
	}
	var req enroll.Request
	err := decodeJSON(r, &req)
	if err == nil {
		err = validateEnroll(req)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	resp, err := a.d.Enrollment.Enroll(r.Context(), req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, r, http.StatusOK, resp)
}

// decodeEnroll decodes and validates a POST /enroll body (what the handler
// does, from bytes, for FuzzDecodeEnroll).
func decodeEnroll(body []byte) (enroll.Request, error) {
	var req enroll.Request
	if err := DecodeBody(body, &req); err != nil {
		return enroll.Request{}, err
	}
	if err := validateEnroll(req); err != nil {
		return enroll.Request{}, err
	}
	return req, nil
}

// validateEnroll checks the fields of a POST /enroll body. The CSR itself is
// parsed and checked by the enrollment service.
func validateEnroll(req enroll.Request) error {
	if err := checkName("coreName", req.CoreName); err != nil {
		return err
	}
	if strings.TrimSpace(req.Token) == "" {
		return errkind.New(errkind.Invalid, "token is required: make one with POST /cores/%s/enrollmentTokens", req.CoreName)
	}
	if strings.TrimSpace(req.CsrPem) == "" {
		return errkind.New(errkind.Invalid, "csrPem is required: send a PEM certificate signing request made with the device's key")
	}
	return nil
}
