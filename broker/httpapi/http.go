package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// wrap applies the per-route gates: Accept negotiation, authentication,
// body size limit.
func (a *API) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !rt.Raw && !acceptable(r.Header.Get("Accept")) {
			writeMessage(w, r, http.StatusUnsupportedMediaType,
				"unsupported Accept "+strconv.Quote(r.Header.Get("Accept"))+": use "+cdf.MediaType+" or application/json")
			return
		}
		if !rt.Open {
			token, ok := bearer(r)
			// Without a bearer token, the dashboard's session cookie (same-origin only).
			viaSession := false
			if id, has := sessionID(r); !ok && has && a.d.Sessions != nil {
				if !a.authenticateSession(w, r, id) {
					return
				}
				viaSession = true
			}
			if !ok && !viaSession {
				w.Header().Set("WWW-Authenticate", `Bearer realm="ggfleet"`)
				writeMessage(w, r, http.StatusUnauthorized, "missing credentials: send Authorization: Bearer <token> (the admin token is in <data-dir>/admin.token)")
				return
			}
			if !viaSession {
				var err error
				if a.d.Auth == nil {
					err = errkind.New(errkind.Unauthorized, "no authenticator")
				} else {
					err = a.d.Auth.Authenticate(r.Context(), token)
				}
				switch {
				case err == nil:
				case errkind.Is(err, errkind.Unauthorized):
					w.Header().Set("WWW-Authenticate", `Bearer realm="ggfleet", error="invalid_token"`)
					writeMessage(w, r, http.StatusUnauthorized, "invalid or expired token")
					return
				default:
					// The token could not be checked (database down): say
					// so with 503, not a 401 that sends people after their token.
					a.writeError(w, r, fmt.Errorf("check the API token: %w", err))
					return
				}
			}
		}
		limit := a.d.MaxBodyBytes
		if rt.MaxBodyBytes > 0 {
			limit = rt.MaxBodyBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		rt.Handler(w, r)
	})
}

func (a *API) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
				writeMessage(w, r, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// bearer extracts the bearer token of a request.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		t := strings.TrimSpace(h[7:])
		return t, t != ""
	}
	return "", false
}

// acceptable reports whether a JSON endpoint can answer this Accept header.
func acceptable(accept string) bool {
	if strings.TrimSpace(accept) == "" {
		return true
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case cdf.MediaType, "application/json", "*/*", "application/*":
			return true
		}
	}
	return false
}

// responseType is the JSON content type to answer with: the CDF type unless
// the client asked for application/json only.
func responseType(r *http.Request) string {
	accept := r.Header.Get("Accept")
	if strings.Contains(accept, "application/json") && !strings.Contains(accept, cdf.MediaType) {
		return "application/json"
	}
	return cdf.MediaType + "; charset=utf-8"
}

// writeJSON writes v with the negotiated content type.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeMessage(w, r, http.StatusInternalServerError, "internal error: encode response")
		return
	}
	w.Header().Set("Content-Type", responseType(r))
	w.WriteHeader(status)
	_, _ = w.Write(body)
	_, _ = w.Write([]byte("\n"))
}

// writeMessage writes the {"message"} error body.
func writeMessage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	w.Header().Set("Content-Type", responseType(r))
	w.WriteHeader(status)
	body, _ := json.Marshal(cdf.ErrorBody{Message: msg})
	_, _ = w.Write(body)
	_, _ = w.Write([]byte("\n"))
}

// writeError maps an error to its status (by errkind) and writes its message.
// Unexpected errors are logged and shown as a generic message.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeMessage(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large: the limit is %d bytes", mbe.Limit))
		return
	}
	status := http.StatusInternalServerError
	switch errkind.KindOf(err) {
	case errkind.Invalid:
		status = http.StatusBadRequest
	case errkind.NotFound:
		status = http.StatusNotFound
	case errkind.Conflict:
		status = http.StatusConflict
	case errkind.Unauthorized:
		status = http.StatusUnauthorized
	case errkind.Forbidden:
		status = http.StatusForbidden
	case errkind.Unavailable:
		status = http.StatusServiceUnavailable
	}
	msg := errkind.Message(err)
	if status == http.StatusInternalServerError || msg == "" {
		a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		if msg == "" {
			msg = "internal error; the broker log has details"
		}
	}
	writeMessage(w, r, status, msg)
}

// decodeJSON reads a JSON request body into v, with messages that say what
// to fix. Unknown fields are ignored (CDF clients send extras).
func decodeJSON(r *http.Request, v any) error {
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
	return DecodeBody(body, v)
}

// DecodeBody unmarshals a JSON body into v with user-facing error messages.
// It is exported for the fuzz tests of every request decoder.
func DecodeBody(body []byte, v any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return errkind.New(errkind.Invalid, "the request body is empty: send a JSON object")
	}
	if depth(body) > 32 {
		return errkind.New(errkind.Invalid, "the request body is nested too deeply (more than 32 levels)")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return errkind.New(errkind.Invalid, "malformed JSON at byte %d: %v", se.Offset, se)
		case errors.As(err, &te):
			field := te.Field
			if field == "" {
				field = "the body"
			}
			return errkind.New(errkind.Invalid, "%s must be %s, not a JSON %s", field, jsonTypeName(te.Type.Kind().String()), te.Value)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errkind.New(errkind.Invalid, "malformed JSON: the body ends too early")
		}
		return errkind.Wrap(errkind.Invalid, err, "malformed JSON")
	}
	if dec.More() {
		return errkind.New(errkind.Invalid, "malformed JSON: unexpected data after the object")
	}
	return nil
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "int", "int64", "int32", "float64", "uint", "uint64":
		return "a number"
	case "bool":
		return "true or false"
	case "slice":
		return "an array"
	case "map", "struct", "ptr":
		return "an object"
	}
	return "a " + kind
}

// depth returns the maximum nesting depth of brackets outside strings.
func depth(b []byte) int {
	d, maxd, inStr, esc := 0, 0, false, false
	for _, c := range b {
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '{' || c == '[':
			d++
			if d > maxd {
				maxd = d
			}
		case c == '}' || c == ']':
			d--
		}
	}
	return maxd
}

// Page is a parsed pagination request.
type Page struct {
	Count    int    // 1–1000, default 100
	RawCount string // echoed back in pagination.count when given
	After    string // exclusive start cursor
}

// parsePage reads count and the named cursor parameter.
func parsePage(r *http.Request, cursorParam string) (Page, error) {
	p := Page{Count: 100, After: r.URL.Query().Get(cursorParam)}
	if raw := r.URL.Query().Get("count"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 1000 {
			return p, errkind.New(errkind.Invalid, "count must be a whole number from 1 to 1000, got %q", raw)
		}
		p.Count, p.RawCount = n, raw
	}
	return p, nil
}

// pagination builds the response pagination block, or nil when it would be
// empty and always is false.
func (p Page) pagination(more bool, cursorKey string, last any, always bool) *cdf.Pagination {
	pg := &cdf.Pagination{Count: p.RawCount}
	if more {
		pg.LastEvaluated = map[string]any{cursorKey: last}
	}
	if !always && pg.Count == "" && pg.LastEvaluated == nil {
		return nil
	}
	return pg
}

// parseBool reads a boolean query value: true/false/1/0; absent gives def.
func parseBool(r *http.Request, name string, def bool) (bool, error) {
	raw, ok := r.URL.Query()[name]
	if !ok || len(raw) == 0 {
		return def, nil
	}
	switch strings.ToLower(raw[0]) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return def, errkind.New(errkind.Invalid, "%s must be true, false, 1 or 0, got %q", name, raw[0])
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

// checkName validates a thing, core, device or group name (DESIGN.md: Names).
func checkName(what, name string) error {
	if !nameRE.MatchString(name) {
		return errkind.New(errkind.Invalid, "%s %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and - (no ':' and no non-ASCII characters)", what, name)
	}
	return nil
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if a.d.Ready != nil {
		if err := a.d.Ready(r.Context()); err != nil {
			writeMessage(w, r, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
	}
	writeJSON(w, r, http.StatusOK, map[string]string{"status": "ready"})
}
