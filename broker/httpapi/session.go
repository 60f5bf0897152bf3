package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// SessionCookie is the name of the dashboard's session cookie (set by
// POST /ui/login, broker/ui). It holds an opaque session id, never a token.
const SessionCookie = "ggfleet_session"

// CSRFHeader and CSRFValue are the header every state-changing request
// authenticated by the session cookie must carry. A cross-origin page cannot
// send a custom header without a CORS preflight, which the broker never
// grants, so the header proves the request comes from the dashboard itself.
const (
	CSRFHeader = "X-Requested-With"
	CSRFValue  = "ggfleet-ui"
)

// SessionAuthenticator checks dashboard session ids (broker/auth.Service).
type SessionAuthenticator interface {
	// AuthenticateSession returns nil for a live session, an
	// errkind.Unauthorized error for an unknown or expired one.
	AuthenticateSession(ctx context.Context, id string) error
}

// sessionID returns the session cookie's value, when the request has one.
func sessionID(r *http.Request) (string, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return "", false
	}
	return c.Value, true
}

// authenticateSession accepts a request that carries the dashboard's session
// cookie instead of a bearer token. The cookie is accepted only on
// same-origin requests (Sec-Fetch-Site, Origin), and requests that change
// state must also carry CSRFHeader. It writes the refusal and returns false
// when the request may not go on.
func (a *API) authenticateSession(w http.ResponseWriter, r *http.Request, id string) bool {
	if msg := CheckSameOrigin(r, a.d.BaseURL); msg != "" {
		writeMessage(w, r, http.StatusForbidden, msg)
		return false
	}
	if !safeMethod(r.Method) && r.Header.Get(CSRFHeader) != CSRFValue {
		writeMessage(w, r, http.StatusForbidden, "a request authenticated by the dashboard session must send the header "+CSRFHeader+": "+CSRFValue)
		return false
	}
	err := a.d.Sessions.AuthenticateSession(r.Context(), id)
	switch {
	case err == nil:
		return true
	case errkind.Is(err, errkind.Unauthorized):
		writeMessage(w, r, http.StatusUnauthorized, "the dashboard session is invalid or has expired: log in again at /ui/login")
	default:
		a.writeError(w, r, err)
	}
	return false
}

// safeMethod reports whether method only reads.
func safeMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// CheckSameOrigin returns "" when a browser request comes from a page of
// this broker, and otherwise a message saying why it was refused. A request
// is same-origin when its Sec-Fetch-Site is "same-origin" (or "none", a
// navigation the user typed, for reads only) and its Origin, when sent,
// names this server: the request's Host, or the origin of baseURL (the
// broker's public URL, for TLS-terminating proxies). Requests with neither
// header (not a modern browser) may only read; a cookie-holding page cannot
// be made to send them cross-site, since the cookie is SameSite=Strict.
func CheckSameOrigin(r *http.Request, baseURL string) string {
	site := r.Header.Get("Sec-Fetch-Site")
	switch site {
	case "", "same-origin":
	case "none":
		if !safeMethod(r.Method) {
			return "cross-origin request refused: the dashboard session is accepted only from the dashboard's own pages"
		}
	default:
		return "cross-origin request refused (Sec-Fetch-Site: " + site + "): the dashboard session is accepted only from the dashboard's own pages; other clients send Authorization: Bearer <token>"
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		if site == "" && !safeMethod(r.Method) {
			return "request refused: a state-changing request with the dashboard session must come from a browser that sends Origin or Sec-Fetch-Site"
		}
		return ""
	}
	if !originMatches(origin, r.Host, baseURL) {
		return "cross-origin request refused (Origin: " + origin + "): the dashboard session is accepted only from the dashboard's own pages; other clients send Authorization: Bearer <token>"
	}
	return ""
}

// originMatches reports whether an Origin header names this server.
func originMatches(origin, host, baseURL string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.Path != "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	if b, err := url.Parse(baseURL); err == nil && b.Host != "" {
		return strings.EqualFold(u.Scheme, b.Scheme) && strings.EqualFold(u.Host, b.Host)
	}
	return false
}
