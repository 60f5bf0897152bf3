// Package identitytest is a test helper: Broker, an httptest fake of the
// broker's POST /enroll that signs CSRs with a throwaway CA and spends each
// enrollment token once. Agent packages' tests (identity, cli, daemon) use
// it to enroll a state directory without a real broker. Tests only.
package identitytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/shared/apiclient"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// CA is a throwaway certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  string
}

// NewCA makes a CA valid for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, PEM: certs.EncodeCertificate(der)}
}

// SHA256 is the CA's pin: hex SHA-256 of its certificate's DER.
func (ca *CA) SHA256() string {
	sum := sha256.Sum256(ca.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Issue signs a certificate for pub, valid for ten hours, with the given
// common name, extended key usage and DNS names or IPs.
func (ca *CA) Issue(t testing.TB, pub any, cn string, eku x509.ExtKeyUsage, hosts ...string) []byte {
	t.Helper()
	der, err := ca.issue(pub, cn, eku, hosts...)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (ca *CA) issue(pub any, cn string, eku x509.ExtKeyUsage, hosts ...string) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * time.Hour).Truncate(time.Second),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
}

// ServerCertificate is a TLS server certificate for hosts, with the CA in
// its chain (as the broker's --tls-auto serves it).
func (ca *CA) ServerCertificate(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := ca.Issue(t, key.Public(), hosts[0], x509.ExtKeyUsageServerAuth, hosts...)
	return tls.Certificate{Certificate: [][]byte{leaf, ca.Cert.Raw}, PrivateKey: key}
}

// Broker is a fake of POST /enroll.
type Broker struct {
	// CA issues device certificates and the fake's TLS certificate; it is
	// also the server CA the answers name.
	CA *CA
	// Mode is the answered mode ("local" unless changed before enrolling).
	Mode string
	// MQTTEndpoint is the answered endpoint (default "127.0.0.1:8883").
	MQTTEndpoint string
	// WrongKey makes the fake certify another key than the CSR's.
	WrongKey bool

	srv    *httptest.Server
	mu     sync.Mutex
	calls  int
	tokens map[string]string // token → core
}

// NewBroker starts a fake broker, over TLS (certificate for 127.0.0.1 from
// CA, CA in the chain) when useTLS, else plain HTTP. It stops with the test.
func NewBroker(t testing.TB, useTLS bool) *Broker {
	t.Helper()
	b := &Broker{CA: NewCA(t, "test device CA"), Mode: "local", MQTTEndpoint: "127.0.0.1:8883", tokens: map[string]string{}}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	if useTLS {
		b.srv.TLS = &tls.Config{Certificates: []tls.Certificate{b.CA.ServerCertificate(t, "127.0.0.1")}}
		b.srv.StartTLS()
	} else {
		b.srv.Start()
	}
	t.Cleanup(b.srv.Close)
	return b
}

// URL is the fake's base URL.
func (b *Broker) URL() string { return b.srv.URL }

// Token makes a one-time enrollment token for core.
func (b *Broker) Token(core string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	tok := fmt.Sprintf("gge_%s_%d", core, len(b.tokens)+b.calls)
	b.tokens[tok] = core
	return tok
}

// Calls is how many POST /enroll requests reached the fake.
func (b *Broker) Calls() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls
}

func (b *Broker) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, msg string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"message": msg})
	}
	if r.Method != http.MethodPost || r.URL.Path != "/enroll" {
		fail(http.StatusNotFound, "no such route")
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	var req apiclient.EnrollRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(http.StatusBadRequest, "the body is not JSON")
		return
	}
	core, ok := b.tokens[req.Token]
	if !ok || core != req.CoreName {
		fail(http.StatusUnauthorized, "enrollment token is not valid: make a new one with POST /cores/"+req.CoreName+"/enrollmentTokens")
		return
	}
	csr, err := certs.ParseCSR(req.CsrPem)
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	if csr.Subject.CommonName != req.CoreName {
		fail(http.StatusBadRequest, "the CSR's common name is not the core name")
		return
	}
	delete(b.tokens, req.Token)
	pub := csr.PublicKey
	if b.WrongKey {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub = k.Public()
	}
	der, err := b.CA.issue(pub, req.CoreName, x509.ExtKeyUsageClientAuth)
	if err != nil {
		fail(http.StatusInternalServerError, err.Error())
		return
	}
	json.NewEncoder(w).Encode(apiclient.EnrollResponse{
		ThingName:              req.CoreName,
		CertificatePem:         certs.EncodeCertificate(der),
		CaCertificatePem:       b.CA.PEM,
		ServerCaCertificatePem: b.CA.PEM,
		InstallerConfig:        "system:\n  thingName: " + req.CoreName + "\n",
		MQTTEndpoint:           b.MQTTEndpoint,
		BrokerURL:              b.srv.URL,
		Mode:                   b.Mode,
	})
}
