package e2e

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestAuthRequired(t *testing.T) {
	b := startBroker(t)
	closed := []struct{ method, path string }{
		{"GET", "/templates"}, {"POST", "/templates"}, {"GET", "/coreTasks"}, {"POST", "/coreTasks"},
		{"GET", "/cores"}, {"GET", "/cores/x"}, {"GET", "/deviceTasks"}, {"GET", "/devices"},
		{"DELETE", "/devices/x"}, {"GET", "/certificateAuthorities"}, {"POST", "/cores/x/enrollmentTokens"},
		{"GET", "/artifacts/greengrass2/artifacts/x/x/certs.zip"}, {"GET", "/registry/things/x"},
		{"PUT", "/provisioningTemplates/x"}, {"PUT", "/registry/policies/x"},
	}
	for _, c := range closed {
		if r := b.doWith(c.method, c.path, nil, nil); r.Status != 401 || r.Message() == "" {
			t.Errorf("%s %s without a token: %d %s", c.method, c.path, r.Status, r.Body)
		}
		if r := b.doWith(c.method, c.path, nil, map[string]string{"Authorization": "Bearer wrong"}); r.Status != 401 {
			t.Errorf("%s %s with a wrong token: %d", c.method, c.path, r.Status)
		}
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := b.doWith("GET", p, nil, nil); r.Status != 200 {
			t.Errorf("GET %s without a token: %d", p, r.Status)
		}
	}
	// The admin token file is private.
	st, err := os.Stat(filepath.Join(b.dataDir, "admin.token"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token mode: %v %v", st.Mode(), err)
	}
	// Tokens never reach the log.
	if strings.Contains(b.log(), b.token) {
		t.Fatal("the admin token appears in the broker log")
	}
}

func TestBadInputIs4xx(t *testing.T) {
	b := startBroker(t)
	long := strings.Repeat("a", 129)
	cases := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"malformed JSON", "POST", "/coreTasks", `{"type":`, 400},
		{"wrong type", "POST", "/coreTasks", `{"type":"Create","coreVersion":2,"cores":[]}`, 400},
		{"no cores", "POST", "/coreTasks", `{"type":"Create","coreVersion":"2.5.0","cores":[]}`, 400},
		{"bad type", "POST", "/coreTasks", `{"type":"Update","coreVersion":"2.5.0","cores":[{"name":"a","provisioningTemplate":"t"}]}`, 400},
		{"delete without options", "POST", "/coreTasks", `{"type":"Delete","coreVersion":"2.5.0","cores":[{"name":"a","provisioningTemplate":"t"}]}`, 400},
		{"colon in name", "POST", "/coreTasks", `{"type":"Create","coreVersion":"2.5.0","cores":[{"name":"a:b","provisioningTemplate":"t"}]}`, 400},
		{"non-ASCII name", "POST", "/coreTasks", `{"type":"Create","coreVersion":"2.5.0","cores":[{"name":"caf\u00e9","provisioningTemplate":"t"}]}`, 400},
		{"long name", "POST", "/coreTasks", `{"type":"Create","coreVersion":"2.5.0","cores":[{"name":"` + long + `","provisioningTemplate":"t"}]}`, 400},
		{"template name with colon", "POST", "/templates", `{"name":"a:b","components":[{"key":"a.b","version":"1.0.0"}]}`, 400},
		{"deep JSON", "POST", "/templates", strings.Repeat("[", 5000) + strings.Repeat("]", 5000), 400},
		{"oversized body", "POST", "/templates", `{"name":"` + strings.Repeat("x", 5<<20) + `"}`, 413},
		{"count too big", "GET", "/cores?count=1001", nil, 400},
		{"count zero", "GET", "/coreTasks?count=0", nil, 400},
		{"count not a number", "GET", "/templates?count=ten", nil, 400},
		{"traversal in artifact key", "GET", "/artifacts/greengrass2/artifacts/../../admin.token", nil, 400},
		{"encoded traversal", "GET", "/artifacts/greengrass2/%2e%2e/%2e%2e/secrets.key", nil, 400},
		{"SQL metacharacters", "GET", "/cores/x'%20OR%20'1'='1", nil, 400},
		{"unknown task", "GET", "/coreTasks/abcdefghi", nil, 404},
		{"unknown core", "GET", "/cores/nope", nil, 404},
		{"unknown device", "GET", "/devices/nope", nil, 404},
		{"unknown template", "GET", "/templates/nope", nil, 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := b.do(c.method, c.path, c.body)
			// Go's mux cleans ".." paths with a redirect; a redirect never reaches a file either.
			if c.want == 400 && (r.Status == 301 || r.Status == 307 || r.Status == 404) && strings.Contains(c.name, "traversal") {
				return
			}
			if r.Status != c.want {
				t.Fatalf("status %d, want %d; body %.300s", r.Status, c.want, r.Body)
			}
			if r.Message() == "" {
				t.Fatalf("no {\"message\"} in %.300s", r.Body)
			}
		})
	}
	// An unsupported Accept gets 415; the CDF type, application/json and */* are served.
	for accept, want := range map[string]int{"text/html": 415, "application/json": 200, "*/*": 200, "application/vnd.aws-cdf-v1.0+json": 200} {
		if r := b.do("GET", "/templates", nil); r.Status != 200 {
			t.Fatalf("baseline: %d", r.Status)
		}
		r := b.doWith("GET", "/templates", nil, map[string]string{"Authorization": "Bearer " + b.token, "Accept": accept})
		if r.Status != want {
			t.Errorf("Accept %s: %d, want %d", accept, r.Status, want)
		}
	}
	if strings.Contains(b.log(), `"level":"ERROR"`) {
		t.Fatalf("bad input produced errors in the log:\n%s", tail(b.log(), 3000))
	}
}

// TestServeTLSAuto starts the broker with --tls-auto and checks the banner's
// pin matches the CA that issued the served certificate.
func TestServeTLSAuto(t *testing.T) {
	b := &broker{t: t, dataDir: t.TempDir(), listen: freeAddr(t), mqtt: freeAddr(t)}
	cmd := exec.Command(filepath.Join(binDir, "ggfleet"), "serve", "--tls-auto", "--data-dir", b.dataDir, "--listen", b.listen, "--mqtt-listen", b.mqtt)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(b.dataDir, "broker.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pinRE := regexp.MustCompile(`--ca-sha256 ([0-9a-f]{64})`)
	sc := bufio.NewScanner(stdout)
	var pin, banner string
	deadline := time.Now().Add(60 * time.Second)
	for pin == "" && time.Now().Before(deadline) && sc.Scan() {
		banner += sc.Text() + "\n"
		if m := pinRE.FindStringSubmatch(sc.Text()); m != nil {
			pin = m[1]
		}
	}
	if pin == "" {
		t.Fatalf("no --ca-sha256 pin in the banner:\n%s", banner)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // verified below against the pin, as ggagent does
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs, pin)
		},
	}}}
	waitFor(t, 60*time.Second, "https /healthz", func() bool {
		resp, err := client.Get("https://" + b.listen + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// verifyPinned checks the served chain against the CA whose DER SHA-256 is pin.
func verifyPinned(cs tls.ConnectionState, pin string) error {
	pool := x509.NewCertPool()
	found := false
	for _, c := range cs.PeerCertificates {
		sum := sha256.Sum256(c.Raw)
		if hex.EncodeToString(sum[:]) == pin {
			pool.AddCert(c)
			found = true
		}
	}
	if !found {
		return errPin
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool})
	return err
}

var errPin = &pinError{}

type pinError struct{}

func (*pinError) Error() string { return "no certificate in the served chain matches the pin" }
