package apiclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pin() string {
	sum := sha256.Sum256(ca.cert.Raw)
	return hex.EncodeToString(sum[:])
}

// leaf issues a certificate for host with the given extended key usage.
func (ca *testCA) leaf(t *testing.T, host string, eku x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{eku},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

func tlsServer(t *testing.T, cert tls.Certificate, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	})
}

func TestEnrollPlainHTTP(t *testing.T) {
	want := EnrollResponse{
		ThingName: "core-1", CertificatePem: "CERT", CaCertificatePem: "CA", ServerCaCertificatePem: "SCA",
		InstallerConfig: "system: {}\n", MQTTEndpoint: "broker:8883", BrokerURL: "http://broker:8080", Mode: "local",
	}
	var gotBody map[string]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/prefix/enroll" {
			t.Errorf("request %s %s", r.Method, r.URL.Path)
		}
		if r.Header.Get("Authorization") != "" {
			t.Error("Enroll sent the API token")
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		if ua := r.Header.Get("User-Agent"); ua != "ggagent test" {
			t.Errorf("User-Agent %q", ua)
		}
		json.NewDecoder(r.Body).Decode(&gotBody)
		json.NewEncoder(w).Encode(want)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: srv.URL + "/prefix/", Token: "api-token", UserAgent: "ggagent test"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Enroll(t.Context(), EnrollRequest{CoreName: "core-1", Token: "gge_x", CsrPem: "CSR"})
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	wantBody := map[string]string{"coreName": "core-1", "token": "gge_x", "csrPem": "CSR"}
	if len(gotBody) != len(wantBody) {
		t.Fatalf("body %v, want %v", gotBody, wantBody)
	}
	for k, v := range wantBody {
		if gotBody[k] != v {
			t.Fatalf("body %v, want %v", gotBody, wantBody)
		}
	}
}

func TestDoBearerAndErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte("ok"))
		case "/cores":
			if r.Header.Get("Authorization") != "Bearer api-token" {
				w.WriteHeader(http.StatusUnauthorized)
				w.Write([]byte(`{"message":"a bearer token is required"}`))
				return
			}
			if r.URL.Query().Get("count") != "2" {
				t.Errorf("query %q", r.URL.RawQuery)
			}
			w.Write([]byte(`{"cores":[{"name":"a"}]}`))
		case "/plain":
			http.Error(w, "gateway exploded", http.StatusBadGateway)
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"core \"x\" not found"}`))
		}
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: srv.URL, Token: "api-token"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	var out struct {
		Cores []struct{ Name string } `json:"cores"`
	}
	if err := c.Do(ctx, http.MethodGet, "/cores?count=2", nil, &out); err != nil || len(out.Cores) != 1 || out.Cores[0].Name != "a" {
		t.Fatalf("Do = %+v, %v", out, err)
	}
	var raw strings.Builder
	if err := c.Do(ctx, http.MethodGet, "healthz", nil, &raw); err != nil || raw.String() != "ok" {
		t.Fatalf("Do raw = %q, %v", raw.String(), err)
	}

	tests := []struct {
		path   string
		status int
		msg    string
	}{
		{"/cores/x", 404, `core "x" not found`},
		{"/plain", 502, "gateway exploded"},
	}
	for _, tc := range tests {
		err := c.Do(ctx, http.MethodGet, tc.path, nil, nil)
		apiErr, ok := errors.AsType[*APIError](err)
		if !ok || apiErr.Status != tc.status || apiErr.Message != tc.msg {
			t.Errorf("%s: err = %#v, want status %d message %q", tc.path, err, tc.status, tc.msg)
		}
	}
	noToken, _ := New(Config{BaseURL: srv.URL})
	err = noToken.Do(ctx, http.MethodGet, "/cores", nil, nil)
	if apiErr, ok := errors.AsType[*APIError](err); !ok || apiErr.Status != 401 {
		t.Fatalf("err = %v, want a 401 APIError", err)
	}
}

func TestNetworkError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := New(Config{BaseURL: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Health(t.Context())
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach the broker at http://"+addr+": ") {
		t.Fatalf("err = %v", err)
	}
	if _, ok := errors.AsType[*APIError](err); ok {
		t.Fatal("a network error is an APIError")
	}
}

func TestContextCanceled(t *testing.T) {
	srv := httptest.NewServer(okHandler())
	t.Cleanup(srv.Close)
	c, _ := New(Config{BaseURL: srv.URL})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Health(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no scheme", Config{BaseURL: "broker:8080"}, "not valid"},
		{"ftp", Config{BaseURL: "ftp://broker"}, "not valid"},
		{"empty", Config{}, "not valid"},
		{"query", Config{BaseURL: "http://b/?x=1"}, "query"},
		{"pin on http", Config{BaseURL: "http://b", CASHA256: strings.Repeat("ab", 32)}, "needs an https://"},
		{"short pin", Config{BaseURL: "https://b", CASHA256: "abcd"}, "64 hex digits"},
		{"odd transport", Config{BaseURL: "https://b", CASHA256: strings.Repeat("ab", 32), HTTPClient: &http.Client{Transport: roundTripFunc(nil)}}, "transport"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestPinnedTLS(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	good := tlsServer(t, ca.leaf(t, "127.0.0.1", x509.ExtKeyUsageServerAuth), okHandler())

	leafOnly := ca.leaf(t, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	leafOnly.Certificate = leafOnly.Certificate[:1]
	noCA := tlsServer(t, leafOnly, okHandler())
	wrongHost := tlsServer(t, ca.leaf(t, "broker.example", x509.ExtKeyUsageServerAuth), okHandler())
	// A device certificate from the same CA must not pass for the broker.
	clientCert := tlsServer(t, ca.leaf(t, "127.0.0.1", x509.ExtKeyUsageClientAuth), okHandler())

	colons := strings.ToUpper(ca.pin()[:2]) + ":" + strings.ToUpper(ca.pin()[2:])
	tests := []struct {
		name    string
		url     string
		pin     string
		wantErr string
	}{
		{"pin ok", good.URL, ca.pin(), ""},
		{"pin with colons and upper case", good.URL, colons, ""},
		{"wrong pin", good.URL, other.pin(), "the broker's certificate is not signed by the pinned CA " + other.pin()},
		{"CA not presented", noCA.URL, ca.pin(), "the broker's certificate is not signed by the pinned CA " + ca.pin()},
		{"wrong host", wrongHost.URL, ca.pin(), "--tls-host 127.0.0.1"},
		{"client certificate", clientCert.URL, ca.pin(), "not signed by the pinned CA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{BaseURL: tc.url, CASHA256: tc.pin})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Health(t.Context())
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Health: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "cannot reach the broker at ") {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestRootCAs(t *testing.T) {
	ca := newTestCA(t)
	srv := tlsServer(t, ca.leaf(t, "127.0.0.1", x509.ExtKeyUsageServerAuth), okHandler())
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	c, err := New(Config{BaseURL: srv.URL, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Health(t.Context()); err != nil {
		t.Fatalf("with RootCAs: %v", err)
	}
	// Without the CA the system roots refuse the broker.
	c, _ = New(Config{BaseURL: srv.URL})
	if err := c.Health(t.Context()); err == nil {
		t.Fatal("an unknown CA was accepted")
	}
}
