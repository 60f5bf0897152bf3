package e2e

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/httpapi"
	"github.com/ggfleet/ggfleet/broker/ui"
)

// openRoutes are the routes DESIGN.md lets through without a bearer token
// (Authentication): health, readiness, the API description, enrollment
// (its one-time token is in the body), the installer and agent downloads,
// the dashboard's static files and its login/logout, and the signed patch
// blob URLs (authorised by their signature and expiry instead).
var openRoutes = map[string]bool{
	"GET /healthz":                       true,
	"GET /readyz":                        true,
	"GET /openapi.yaml":                  true,
	"POST /enroll":                       true,
	"GET /install.sh":                    true,
	"GET /downloads/ggagent/{os}/{arch}": true,
	"GET /ui":                            true,
	"GET /ui/{file...}":                  true,
	"POST /ui/login":                     true,
	"POST /ui/logout":                    true,
	"GET /patchBlobs/{sha256}":           true,
}

// brokerRoutes is the broker's route table, built as the composition root
// builds it: the API's own table plus the dashboard's routes.
func brokerRoutes(t *testing.T) []httpapi.Route {
	t.Helper()
	dash, err := ui.New(ui.Config{})
	if err != nil {
		t.Fatal(err)
	}
	routes := httpapi.New(httpapi.Deps{ExtraRoutes: dash.Routes()}).Routes()
	if len(routes) < 50 {
		t.Fatalf("only %d routes enumerated: the table is not what the broker serves", len(routes))
	}
	return routes
}

var pathParam = regexp.MustCompile(`\{([a-zA-Z0-9]+)(\.\.\.)?\}`)

// routeRequest turns a mux pattern into a concrete method and path.
func routeRequest(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	path = pathParam.ReplaceAllStringFunc(path, func(p string) string {
		switch p {
		case "{key...}":
			return "greengrass2/artifacts/x/x/certs.zip"
		case "{file...}":
			return "index.html"
		case "{sha256}":
			return strings.Repeat("0", 64)
		case "{version}":
			return "1"
		case "{os}":
			return "linux"
		case "{arch}":
			return "amd64"
		}
		return "x"
	})
	return method, path
}

// TestFaultsEveryRouteNeedsAToken enumerates the broker's route table, so a
// new route cannot be missed: every route that is not on DESIGN.md's open
// list answers 401 with a message to a request without a token or with a
// wrong one, on the real binary; no route is open unless listed.
func TestFaultsEveryRouteNeedsAToken(t *testing.T) {
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	for _, rt := range brokerRoutes(t) {
		method, path := routeRequest(rt.Pattern)
		if rt.Open {
			if !openRoutes[rt.Pattern] {
				t.Errorf("%s is open but not on DESIGN.md's list of open routes", rt.Pattern)
			}
			if rt.Pattern == "GET /patchBlobs/{sha256}" {
				r := b.doWith(method, path, nil, nil)
				if r.Status < 400 || r.Status >= 500 {
					t.Errorf("%s without a signature: %d, want a 4xx", path, r.Status)
				}
			}
			continue
		}
		if r := b.doWith(method, path, nil, nil); r.Status != 401 || r.Message() == "" {
			t.Errorf("%s %s without a token: %d %.200s", method, path, r.Status, r.Body)
		}
		if r := b.doWith(method, path, nil, map[string]string{"Authorization": "Bearer " + b.token + "x"}); r.Status != 401 {
			t.Errorf("%s %s with a wrong token: %d", method, path, r.Status)
		}
		// 403: a state-changing request with a cookie is refused before the session is looked at (same-origin check).
		if r := b.doWith(method, path, nil, map[string]string{"Cookie": httpapi.SessionCookie + "=forged"}); r.Status != 401 && r.Status != 403 {
			t.Errorf("%s %s with a forged session cookie: %d, want 401 or 403", method, path, r.Status)
		}
	}
	// A path no route matches is a 404, whatever the token.
	if r := b.doWith("GET", "/no/such/route", nil, nil); r.Status != 404 {
		t.Errorf("unknown route: %d", r.Status)
	}
}

// TestFaultsDeviceCertificateIsNoAPIToken: a core's TLS client certificate
// gives no access to the API: admin routes still answer 401 without a
// bearer token over https.
func TestFaultsDeviceCertificateIsNoAPIToken(t *testing.T) {
	b, _ := startTLSBroker(t)
	b.readyCore("cert-core")
	dev := b.enrollDevice("cert-core")
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // the test's client; what matters is the certificate it presents
		Certificates:       []tls.Certificate{dev.cert},
	}}}
	for _, p := range []string{"GET /cores", "GET /cores/cert-core", "POST /cores/cert-core/enrollmentTokens",
		"GET /registry/things/cert-core", "GET /certificateAuthorities", "POST /deploymentTasks", "GET /metrics"} {
		method, path, _ := strings.Cut(p, " ")
		req, err := http.NewRequest(method, b.url+path, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s with the device certificate: %v", p, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("%s with core cert-core's certificate and no token: %d, want 401", p, resp.StatusCode)
		}
	}
}

// TestFaultsEnrollmentTokenExpires: a token used after its expiry is
// refused with a message that says so, and does not enroll.
func TestFaultsEnrollmentTokenExpires(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	b.readyCore("exp-core")
	var tok struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expiresAt"`
	}
	b.must(201, "POST", "/cores/exp-core/enrollmentTokens", map[string]any{"expiresInSeconds": 60}).JSON(t, &tok)
	// The shortest lifetime is a minute: the wait is the fault.
	time.Sleep(time.Until(tok.ExpiresAt.Add(2 * time.Second)))
	dir := filepath.Join(t.TempDir(), "state")
	res := ggagent(t, nil, "enroll", "--broker", b.url, "--core", "exp-core", "--token", tok.Token, "--state-dir", dir)
	wantFailure(t, res, "expired")
	noIdentity(t, dir)
}

// TestFaultsNoSecretsInLogs runs a core's journey with every log at debug
// level (enroll, run, a deployment, credentials, a dashboard login, failed
// enrollments) and greps the broker's and the agent's output for every
// secret involved: the admin token, enrollment tokens, the session cookie,
// PEM private keys, the device key, secrets.key and a stored credential.
func TestFaultsNoSecretsInLogs(t *testing.T) {
	const name = "secret-core"
	b := startBroker(t)
	logBrokerOnFailure(t, b)
	b.readyCore(name)
	var outputs []string // everything ggagent printed, besides its run logs

	tok := b.enrollmentToken(name)
	dir := filepath.Join(t.TempDir(), "state")
	res := ggagent(t, nil, "enroll", "--broker", b.url, "--core", name, "--token", tok, "--state-dir", dir, "--log-level", "debug")
	if res.code != 0 {
		t.Fatalf("enroll: %s", res)
	}
	outputs = append(outputs, res.stdout, res.stderr)
	// A used token and a wrong one, through the agent and straight to the API.
	res = ggagent(t, nil, "enroll", "--broker", b.url, "--core", name, "--token", tok, "--state-dir", filepath.Join(t.TempDir(), "s2"), "--log-level", "debug")
	outputs = append(outputs, res.stdout, res.stderr)
	unused := b.enrollmentToken(name)
	b.doWith("POST", "/enroll", map[string]any{"coreName": "nope", "token": unused, "csrPem": "garbage"}, nil)

	credential := "cred-" + hex.EncodeToString([]byte(time.Now().String()))
	credFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(credFile, []byte(credential), 0o600); err != nil {
		t.Fatal(err)
	}
	res = ggagent(t, nil, "credentials", "set", "--state-dir", dir, "--from-file", credFile, "lab")
	if res.code != 0 {
		t.Fatalf("credentials set: %s", res)
	}
	outputs = append(outputs, res.stdout, res.stderr)

	start := time.Now()
	a := startAgent(t, dir)
	b.waitOnline(name, start.Add(-time.Second))
	b.must(201, "POST", "/templates", map[string]any{"name": "SecretT", "components": []map[string]any{
		{"key": "aws.greengrass.Cli", "version": "2.4.0"}}})
	if task := b.waitTask("/deploymentTasks/"+b.deploy("SecretT", name), 3*time.Minute); task["taskStatus"] != "Success" {
		t.Fatalf("deployment: %v", task)
	}

	// A dashboard login: the session id is a secret too.
	form := url.Values{"token": {b.token}}.Encode()
	r := b.doWith("POST", "/ui/login", form, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json", "Origin": b.url})
	var session string
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == httpapi.SessionCookie {
			session = c.Value
		}
	}
	if session == "" {
		t.Fatalf("dashboard login: %d %s", r.Status, r.Body)
	}
	b.doWith("GET", "/cores", nil, map[string]string{"Cookie": httpapi.SessionCookie + "=" + session})
	a.kill()
	b.stop()

	secrets := map[string]string{
		"admin token":       b.token,
		"enrollment token":  tok,
		"unused token":      unused,
		"session cookie":    session,
		"stored credential": credential,
		"PEM private key":   "PRIVATE KEY-----",
	}
	key, err := os.ReadFile(filepath.Join(b.dataDir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range map[string]string{"raw": string(key), "hex": hex.EncodeToString(key), "base64": base64.StdEncoding.EncodeToString(key)} {
		if len(strings.TrimSpace(v)) >= 16 {
			secrets["secrets.key ("+i+")"] = strings.TrimSpace(v)
		}
	}
	devKey, err := os.ReadFile(filepath.Join(dir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(devKey)) {
		if line = strings.TrimSpace(line); len(line) >= 32 && !strings.HasPrefix(line, "-----") {
			secrets["device.key line"] = line
			break
		}
	}
	logs := map[string]string{"broker log": b.log(), "agent run logs": a.log(), "agent command output": strings.Join(outputs, "\n")}
	for lname, text := range logs {
		if text == "" {
			t.Fatalf("%s is empty: nothing was checked", lname)
		}
		for sname, secret := range secrets {
			if secret == "" {
				t.Fatalf("the %s is empty: nothing to look for", sname)
			}
			if strings.Contains(text, secret) {
				t.Errorf("the %s appears in the %s", sname, lname)
			}
		}
	}
}
