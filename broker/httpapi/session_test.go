package httpapi

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// oneSession accepts only the one session id it is.
type oneSession string

func (s oneSession) AuthenticateSession(_ context.Context, id string) error {
	if id != string(s) {
		return errkind.New(errkind.Unauthorized, "invalid session")
	}
	return nil
}

// TestSessionCookieSameOriginOnly checks when the API accepts the
// dashboard's session cookie in place of a bearer token.
func TestSessionCookieSameOriginOnly(t *testing.T) {
	ok := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, map[string]string{"ok": "yes"})
	}
	api := New(Deps{Auth: tokenAuth("good-token"), Sessions: oneSession("good-session"), BaseURL: "https://fleet.example.com",
		ExtraRoutes: []Route{{Pattern: "GET /test/read", Handler: ok}, {Pattern: "POST /test/write", Handler: ok}}})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	self := srv.URL // the test server's own origin

	tests := []struct {
		name    string
		method  string
		cookie  string
		headers map[string]string
		want    int
		msg     string
	}{
		{"same-origin read", "GET", "good-session", map[string]string{"Sec-Fetch-Site": "same-origin"}, 200, ""},
		{"read with matching Origin", "GET", "good-session", map[string]string{"Origin": self}, 200, ""},
		{"read with the public URL's Origin", "GET", "good-session", map[string]string{"Origin": "https://fleet.example.com"}, 200, ""},
		{"typed navigation read", "GET", "good-session", map[string]string{"Sec-Fetch-Site": "none"}, 200, ""},
		{"read without browser headers", "GET", "good-session", nil, 200, ""},
		{"cross-site read", "GET", "good-session", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "cross-origin"},
		{"same-site read", "GET", "good-session", map[string]string{"Sec-Fetch-Site": "same-site"}, 403, "cross-origin"},
		{"foreign Origin", "GET", "good-session", map[string]string{"Origin": "http://evil.example"}, 403, "evil.example"},
		{"null Origin", "GET", "good-session", map[string]string{"Origin": "null"}, 403, "cross-origin"},
		{"same-origin but foreign Origin", "GET", "good-session", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"}, 403, "cross-origin"},
		{"write with CSRF header", "POST", "good-session", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": self, CSRFHeader: CSRFValue}, 200, ""},
		{"write without CSRF header", "POST", "good-session", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": self}, 403, CSRFHeader},
		{"write with a wrong CSRF value", "POST", "good-session", map[string]string{"Origin": self, CSRFHeader: "XMLHttpRequest"}, 403, CSRFHeader},
		{"cross-site write with CSRF header", "POST", "good-session", map[string]string{"Sec-Fetch-Site": "cross-site", CSRFHeader: CSRFValue}, 403, "cross-origin"},
		{"typed navigation write", "POST", "good-session", map[string]string{"Sec-Fetch-Site": "none", CSRFHeader: CSRFValue}, 403, "cross-origin"},
		{"write without browser headers", "POST", "good-session", map[string]string{CSRFHeader: CSRFValue}, 403, "Origin or Sec-Fetch-Site"},
		{"unknown session", "GET", "other-session", map[string]string{"Sec-Fetch-Site": "same-origin"}, 401, "log in again"},
		{"bearer wins over a bad cookie", "GET", "other-session", map[string]string{"Authorization": "Bearer good-token", "Sec-Fetch-Site": "cross-site"}, 200, ""},
		{"bad bearer with a good cookie", "GET", "good-session", map[string]string{"Authorization": "Bearer bad", "Sec-Fetch-Site": "same-origin"}, 401, "invalid or expired token"},
		{"no credentials", "GET", "", nil, 401, "missing credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := "/test/read"
			if tt.method == "POST" {
				path = "/test/write"
			}
			req, err := http.NewRequest(tt.method, srv.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.cookie != "" {
				req.AddCookie(&http.Cookie{Name: SessionCookie, Value: tt.cookie})
			}
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			body := string(data)
			if resp.StatusCode != tt.want || !strings.Contains(body, tt.msg) {
				t.Fatalf("status %d, body %s; want %d with %q", resp.StatusCode, body, tt.want, tt.msg)
			}
		})
	}
}

// TestSessionCookieIgnoredWithoutSessions checks that a broker without a
// session service treats the cookie as no credentials.
func TestSessionCookieIgnoredWithoutSessions(t *testing.T) {
	api := New(Deps{Auth: tokenAuth("good-token"), ExtraRoutes: []Route{{Pattern: "GET /test/read",
		Handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }}}})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("GET", srv.URL+"/test/read", nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: "anything"})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
}

func TestOriginMatches(t *testing.T) {
	tests := []struct {
		origin, host, base string
		want               bool
	}{
		{"http://127.0.0.1:8080", "127.0.0.1:8080", "", true},
		{"http://LOCALHOST:8080", "localhost:8080", "", true},
		{"https://fleet.example.com", "10.0.0.5:8080", "https://fleet.example.com", true},
		{"http://fleet.example.com", "10.0.0.5:8080", "https://fleet.example.com", false},
		{"http://127.0.0.1:8081", "127.0.0.1:8080", "", false},
		{"http://127.0.0.1:8080/path", "127.0.0.1:8080", "", false},
		{"file://x", "x", "", false},
		{"null", "127.0.0.1:8080", "", false},
	}
	for _, tt := range tests {
		if got := originMatches(tt.origin, tt.host, tt.base); got != tt.want {
			t.Errorf("originMatches(%q, %q, %q) = %v, want %v", tt.origin, tt.host, tt.base, got, tt.want)
		}
	}
}
