// Package ui serves the fleet dashboard at /ui: static HTML, CSS and
// JavaScript modules embedded in the binary (no build step, nothing from a
// CDN), and the login that turns an API token into a session cookie.
//
// The dashboard talks to the broker's own API on the same origin. The
// browser never holds the token: POST /ui/login checks it and sets an
// HttpOnly, SameSite=Strict cookie (Secure over HTTPS) holding an opaque
// session id (broker/auth stores only its hash, with an expiry); the API
// accepts that cookie in place of the bearer token only on same-origin
// requests (broker/httpapi), which is also how the page's EventSource on
// /events authenticates, since EventSource cannot send headers.
package ui

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/auth"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/httpapi"
)

//go:embed assets
var assetFiles embed.FS

// Sessions makes and ends dashboard sessions (broker/auth.Service).
type Sessions interface {
	// Login exchanges a valid API token for a session; errkind.Unauthorized
	// for a bad token.
	Login(ctx context.Context, token string) (auth.Session, error)
	// Logout ends a session; unknown ids are not an error.
	Logout(ctx context.Context, id string) error
}

// Config configures the dashboard.
type Config struct {
	Sessions Sessions
	// SecureCookies marks the session cookie Secure even on plain-HTTP
	// requests (the broker is behind a TLS-terminating proxy). Requests that
	// arrived over TLS always get a Secure cookie.
	SecureCookies bool
	// BaseURL is the broker's public URL; an Origin naming it counts as
	// same-origin (see httpapi.CheckSameOrigin).
	BaseURL string
	Logger  *slog.Logger
}

// ContentSecurityPolicy is sent with every dashboard response: scripts,
// styles, images and connections only from the broker itself, no framing.
const ContentSecurityPolicy = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Dashboard serves /ui.
type Dashboard struct {
	cfg    Config
	log    *slog.Logger
	assets map[string]asset // by name under assets/, "index.html"
}

// New loads the embedded assets. It fails only if the binary was built
// with a broken asset tree.
func New(cfg Config) (*Dashboard, error) {
	d := &Dashboard{cfg: cfg, log: cfg.Logger, assets: map[string]asset{}}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	sub, err := fs.Sub(assetFiles, "assets")
	if err != nil {
		return nil, fmt.Errorf("dashboard assets: %w", err)
	}
	err = fs.WalkDir(sub, ".", func(name string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		body, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		ct := contentType(name)
		if ct == "" {
			return fmt.Errorf("no content type for %s", name)
		}
		sum := sha256.Sum256(body)
		d.assets[name] = asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard assets: %w", err)
	}
	if _, ok := d.assets["index.html"]; !ok {
		return nil, fmt.Errorf("dashboard assets: index.html is missing")
	}
	return d, nil
}

// contentType is the type a dashboard file is served with; explicit, so the
// answer does not depend on the host's mime.types.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js", ".mjs":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	case ".ico":
		return "image/x-icon"
	case ".json":
		return "application/json"
	}
	return ""
}

// Routes are the dashboard's entries in the broker's route table. They are
// open (no bearer token): the static files hold no data, login takes the
// token in its body, logout only ends the caller's own session.
func (d *Dashboard) Routes() []httpapi.Route {
	return []httpapi.Route{
		{Pattern: "GET /ui", Handler: d.redirectRoot, Open: true, Raw: true},
		{Pattern: "GET /ui/{file...}", Handler: d.serveAsset, Open: true, Raw: true},
		{Pattern: "POST /ui/login", Handler: d.login, Open: true, Raw: true},
		{Pattern: "POST /ui/logout", Handler: d.logout, Open: true, Raw: true},
	}
}

// securityHeaders are set on every dashboard response.
func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
}

func (d *Dashboard) redirectRoot(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
}

// serveAsset serves an embedded file: /ui/ is index.html, /ui/login is
// login.html. Files are not fingerprinted, so browsers revalidate them on
// every load (no-cache) and get a 304 while the ETag matches.
func (d *Dashboard) serveAsset(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	name := r.PathValue("file")
	switch name {
	case "":
		name = "index.html"
	case "login":
		name = "login.html"
	}
	a, ok := d.assets[name]
	if !ok || strings.HasPrefix(name, ".") {
		writeMessage(w, http.StatusNotFound, "no such dashboard file: /ui/"+r.PathValue("file"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", fmt.Sprint(len(a.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(a.body)
	}
}

// etagMatches reports whether an If-None-Match list names etag.
func etagMatches(list, etag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// login checks the token of a form POST and sets the session cookie. A
// browser form (Accept: text/html) is redirected to the dashboard, or back
// to the login page with an error code; other clients get JSON.
func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	html := wantsHTML(r)
	fail := func(status int, code, msg string) {
		if html {
			http.Redirect(w, r, "/ui/login?error="+url.QueryEscape(code), http.StatusSeeOther)
			return
		}
		writeMessage(w, status, msg)
	}
	if msg := httpapi.CheckSameOrigin(r, d.cfg.BaseURL); msg != "" {
		writeMessage(w, http.StatusForbidden, msg)
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/x-www-form-urlencoded" && mt != "multipart/form-data") {
		fail(http.StatusBadRequest, "form", "send the token as a form: Content-Type application/x-www-form-urlencoded with token=<API token>")
		return
	}
	if err := r.ParseMultipartForm(64 << 10); err != nil && err != http.ErrNotMultipart {
		fail(http.StatusBadRequest, "form", "could not read the login form: "+err.Error())
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	if token == "" {
		fail(http.StatusBadRequest, "empty", "the token field is empty: paste an API token (the admin token is in <data-dir>/admin.token)")
		return
	}
	s, err := d.cfg.Sessions.Login(r.Context(), token)
	switch {
	case errkind.Is(err, errkind.Unauthorized):
		d.log.Info("dashboard login refused", "remote", r.RemoteAddr, "reason", errkind.Message(err))
		fail(http.StatusUnauthorized, "invalid", "invalid or revoked token")
		return
	case err != nil:
		d.log.Error("dashboard login failed", "err", err)
		fail(http.StatusServiceUnavailable, "unavailable", "the login failed on the broker; its log has details")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: httpapi.SessionCookie, Value: s.ID, Path: "/",
		Expires: s.ExpiresAt, MaxAge: int(time.Until(s.ExpiresAt).Seconds()),
		HttpOnly: true, Secure: d.secure(r), SameSite: http.SameSiteStrictMode,
	})
	if html {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"expiresAt": s.ExpiresAt.UTC().Format(time.RFC3339)})
}

// logout ends the caller's session and clears the cookie.
func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	w.Header().Set("Cache-Control", "no-store")
	if msg := httpapi.CheckSameOrigin(r, d.cfg.BaseURL); msg != "" {
		writeMessage(w, http.StatusForbidden, msg)
		return
	}
	if c, err := r.Cookie(httpapi.SessionCookie); err == nil && c.Value != "" {
		if err := d.cfg.Sessions.Logout(r.Context(), c.Value); err != nil {
			d.log.Error("dashboard logout failed", "err", err)
			writeMessage(w, http.StatusServiceUnavailable, "the logout failed on the broker; its log has details")
			return
		}
	}
	http.SetCookie(w, &http.Cookie{
		Name: httpapi.SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: d.secure(r), SameSite: http.SameSiteStrictMode,
	})
	if wantsHTML(r) {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (d *Dashboard) secure(r *http.Request) bool {
	return r.TLS != nil || d.cfg.SecureCookies
}

// wantsHTML reports whether the request is a browser navigation (a form
// submission) rather than a script or API client.
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// writeMessage writes the broker's {"message"} error body.
func writeMessage(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
