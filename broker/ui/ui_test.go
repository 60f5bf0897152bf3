package ui_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/auth"
	"github.com/ggfleet/ggfleet/broker/httpapi"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/broker/ui"
)

// env is a broker HTTP edge with the dashboard, a real token and session
// store, a settable clock and one protected route (GET /probe).
type env struct {
	srv   *httptest.Server
	token string
	now   *time.Time
}

func newEnv(t *testing.T, tlsServer, secureCookies bool) *env {
	t.Helper()
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	now := time.Now()
	e := &env{now: &now}
	svc := auth.New(auth.Config{Store: db, Sessions: db, SessionTTL: time.Hour, Now: func() time.Time { return *e.now }})
	var err error
	if e.token, err = svc.CreateToken(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	dash, err := ui.New(ui.Config{Sessions: svc, SecureCookies: secureCookies})
	if err != nil {
		t.Fatal(err)
	}
	probe := httpapi.Route{Pattern: "GET /probe", Handler: func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "secret data") }}
	api := httpapi.New(httpapi.Deps{Auth: svc, Sessions: svc, ExtraRoutes: append(dash.Routes(), probe)})
	if tlsServer {
		e.srv = httptest.NewTLSServer(api.Handler())
	} else {
		e.srv = httptest.NewServer(api.Handler())
	}
	t.Cleanup(e.srv.Close)
	return e
}

// do sends a request from "the dashboard" (same origin) unless headers say otherwise.
func (e *env) do(t *testing.T, method, path, body string, headers map[string]string, cookies ...*http.Cookie) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", e.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	client := e.srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(data)
}

func sessionCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == httpapi.SessionCookie {
			return c
		}
	}
	return nil
}

func TestStaticFiles(t *testing.T) {
	e := newEnv(t, false, false)
	tests := []struct {
		path, wantType, wantBody string
	}{
		{"/ui/", "text/html; charset=utf-8", `<script type="module" src="/ui/app.js">`},
		{"/ui/login", "text/html; charset=utf-8", `action="/ui/login"`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "subscribe(onEvent"},
		{"/ui/api.js", "text/javascript; charset=utf-8", "X-Requested-With"},
		{"/ui/style.css", "text/css; charset=utf-8", ".chart"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := e.do(t, "GET", tt.path, "", nil)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tt.wantType || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("status %d, type %q, body has %q: %v", resp.StatusCode, resp.Header.Get("Content-Type"), tt.wantBody, strings.Contains(body, tt.wantBody))
			}
			h := resp.Header
			if h.Get("Content-Security-Policy") != ui.ContentSecurityPolicy || !strings.HasPrefix(ui.ContentSecurityPolicy, "default-src 'self'") {
				t.Errorf("CSP = %q", h.Get("Content-Security-Policy"))
			}
			if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Cache-Control") != "no-cache" || h.Get("ETag") == "" {
				t.Errorf("headers = %v", h)
			}
			// Revalidation: the same ETag gets a 304 with no body.
			resp, body = e.do(t, "GET", tt.path, "", map[string]string{"If-None-Match": h.Get("ETag")})
			if resp.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("If-None-Match: status %d, body %q; want 304 and no body", resp.StatusCode, body)
			}
		})
	}
	// No external resources anywhere: everything comes from /ui/.
	for _, p := range []string{"/ui/", "/ui/login", "/ui/app.js", "/ui/style.css"} {
		if _, body := e.do(t, "GET", p, "", nil); strings.Contains(body, "http://") || strings.Contains(body, "https://") {
			t.Errorf("%s refers to an external URL", p)
		}
	}
	resp, body := e.do(t, "GET", "/ui/nope.js", "", nil)
	if resp.StatusCode != 404 || !strings.Contains(body, `"message"`) {
		t.Errorf("missing file: %d %s", resp.StatusCode, body)
	}
	resp, _ = e.do(t, "GET", "/ui", "", nil)
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestLoginRefusals(t *testing.T) {
	e := newEnv(t, false, false)
	form := "token=" + url.QueryEscape(e.token)
	tests := []struct {
		name     string
		body     string
		headers  map[string]string
		want     int
		msg      string // in the JSON message, or the redirect's error code
		location string
	}{
		{"bad token", "token=ggf_nope", nil, 401, "invalid or revoked token", ""},
		{"empty token", "token=", nil, 400, "the token field is empty", ""},
		{"no form", `{"token":"x"}`, map[string]string{"Content-Type": "application/json"}, 400, "send the token as a form", ""},
		{"cross-site form", form, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "cross-origin", ""},
		{"foreign Origin", form, map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": ""}, 403, "evil.example", ""},
		{"browser form, bad token", "token=ggf_nope", map[string]string{"Accept": "text/html"}, 303, "", "/ui/login?error=invalid"},
		{"browser form, empty token", "token=+", map[string]string{"Accept": "text/html"}, 303, "", "/ui/login?error=empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.do(t, "POST", "/ui/login", tt.body, tt.headers)
			if resp.StatusCode != tt.want || !strings.Contains(body, tt.msg) || resp.Header.Get("Location") != tt.location {
				t.Fatalf("status %d, location %q, body %s; want %d, %q, %q", resp.StatusCode, resp.Header.Get("Location"), body, tt.want, tt.location, tt.msg)
			}
			if sessionCookie(resp) != nil {
				t.Fatal("a refused login set a session cookie")
			}
		})
	}
}

func TestLoginSessionLogout(t *testing.T) {
	e := newEnv(t, false, false)
	resp, body := e.do(t, "POST", "/ui/login", "token="+url.QueryEscape(e.token), map[string]string{"Accept": "text/html"})
	c := sessionCookie(resp)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" || c == nil {
		t.Fatalf("login: %d → %q, cookie %v, body %s", resp.StatusCode, resp.Header.Get("Location"), c, body)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" || c.MaxAge <= 0 {
		t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, not Secure over http, Path=/, a Max-Age", c)
	}
	if strings.Contains(c.Value, e.token) || !strings.HasPrefix(c.Value, auth.SessionPrefix) {
		t.Errorf("cookie value %q: want an opaque session id", c.Value)
	}

	// The cookie opens the API from the same origin, and only from there.
	if resp, body := e.do(t, "GET", "/probe", "", nil, c); resp.StatusCode != 200 || body != "secret data" {
		t.Fatalf("same-origin GET with the cookie: %d %s", resp.StatusCode, body)
	}
	if resp, _ := e.do(t, "GET", "/probe", "", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, c); resp.StatusCode != 403 {
		t.Fatalf("cross-origin GET with the cookie: %d, want 403", resp.StatusCode)
	}

	// Logout ends the session on the broker, not just in the browser.
	resp, _ = e.do(t, "POST", "/ui/logout", "", map[string]string{httpapi.CSRFHeader: httpapi.CSRFValue}, c)
	cleared := sessionCookie(resp)
	if resp.StatusCode != http.StatusNoContent || cleared == nil || cleared.MaxAge >= 0 {
		t.Fatalf("logout: %d, cookie %+v; want 204 and a cleared cookie", resp.StatusCode, cleared)
	}
	if resp, body := e.do(t, "GET", "/probe", "", nil, c); resp.StatusCode != 401 || !strings.Contains(body, "log in again") {
		t.Fatalf("GET with the old cookie after logout: %d %s; want 401", resp.StatusCode, body)
	}
	if resp, _ := e.do(t, "POST", "/ui/logout", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, c); resp.StatusCode != 403 {
		t.Errorf("cross-site logout: %d, want 403", resp.StatusCode)
	}
}

func TestSessionExpires(t *testing.T) {
	e := newEnv(t, false, false)
	resp, body := e.do(t, "POST", "/ui/login", "token="+url.QueryEscape(e.token), nil)
	c := sessionCookie(resp)
	if resp.StatusCode != 200 || c == nil || !strings.Contains(body, "expiresAt") {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	*e.now = e.now.Add(59 * time.Minute)
	if resp, _ := e.do(t, "GET", "/probe", "", nil, c); resp.StatusCode != 200 {
		t.Fatalf("before expiry: %d", resp.StatusCode)
	}
	*e.now = e.now.Add(2 * time.Minute)
	if resp, body := e.do(t, "GET", "/probe", "", nil, c); resp.StatusCode != 401 || !strings.Contains(body, "expired") {
		t.Fatalf("after expiry: %d %s; want 401", resp.StatusCode, body)
	}
}

func TestSecureCookie(t *testing.T) {
	for _, tt := range []struct {
		name               string
		tlsServer, setting bool
	}{{"over TLS", true, false}, {"behind a TLS proxy", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.tlsServer, tt.setting)
			resp, body := e.do(t, "POST", "/ui/login", "token="+url.QueryEscape(e.token), nil)
			if c := sessionCookie(resp); c == nil || !c.Secure || !c.HttpOnly {
				t.Fatalf("login: %d %s, cookie %+v; want Secure and HttpOnly", resp.StatusCode, body, c)
			}
		})
	}
}
