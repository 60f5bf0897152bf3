package enroll_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/enroll"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// testCA is a throwaway CA made with crypto/x509; it satisfies enroll.Issuer.
type testCA struct {
	key  crypto.Signer
	cert *x509.Certificate
	pem  string

	mu    sync.Mutex
	caIDs []string // the caID of every Issue call
	fail  error
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := certs.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: key, cert: cert, pem: certs.EncodeCertificate(der)}
}

func (ca *testCA) Issue(ctx context.Context, caID string, pub crypto.PublicKey, subject pkix.Name, days int) (string, string, error) {
	ca.mu.Lock()
	ca.caIDs = append(ca.caIDs, caID)
	fail := ca.fail
	ca.mu.Unlock()
	if fail != nil {
		return "", "", fail
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().AddDate(0, 0, days),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return "", "", err
	}
	return certs.EncodeCertificate(der), ca.pem, nil
}

// fakeProvider records the calls enrollment makes. Calls enrollment must not
// make panic through the nil embedded interface.
type fakeProvider struct {
	provider.Provider

	mu         sync.Mutex
	things     map[string]provider.Thing
	certs      map[string]string   // id → PEM
	certStatus map[string]string   // id → status
	principals map[string][]string // thing → cert ids
	attached   map[string][]string // cert id → policies
	failPolicy error
}

func newFakeProvider() *fakeProvider {
	return &fakeProvider{
		things:     map[string]provider.Thing{},
		certs:      map[string]string{},
		certStatus: map[string]string{},
		principals: map[string][]string{},
		attached:   map[string][]string{},
	}
}

func (p *fakeProvider) Mode() string { return "local" }

func (p *fakeProvider) DescribeThing(ctx context.Context, name string) (provider.Thing, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	th, ok := p.things[name]
	if !ok {
		return provider.Thing{}, errkind.New(errkind.NotFound, "thing %q not found", name)
	}
	return th, nil
}

func (p *fakeProvider) RegisterCertificate(ctx context.Context, certPEM, caPEM, status string) (string, error) {
	c, err := certs.ParseCertificate(certPEM)
	if err != nil {
		return "", errkind.Wrap(errkind.Invalid, err, "bad certificate")
	}
	if _, err := certs.ParseCertificate(caPEM); err != nil {
		return "", errkind.Wrap(errkind.Invalid, err, "bad CA certificate")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	id := certs.ID(c)
	p.certs[id], p.certStatus[id] = certPEM, status
	return id, nil
}

func (p *fakeProvider) AttachThingPrincipal(ctx context.Context, thing, certID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.certs[certID]; !ok {
		return errkind.New(errkind.NotFound, "certificate %s not found", certID)
	}
	p.principals[thing] = append(p.principals[thing], certID)
	return nil
}

func (p *fakeProvider) AttachPolicy(ctx context.Context, policy, certID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failPolicy != nil {
		return p.failPolicy
	}
	p.attached[certID] = append(p.attached[certID], policy)
	return nil
}

// fakeCores is the core registry: core name → CA id.
type fakeCores map[string]string

func (c fakeCores) CoreCA(ctx context.Context, name string) (string, error) {
	caID, ok := c[name]
	if !ok {
		return "", errkind.New(errkind.NotFound, "core %q not found", name)
	}
	return caID, nil
}

type fakeRegistrar struct {
	mu    sync.Mutex
	names []string
}

func (r *fakeRegistrar) MarkCoreRegistered(ctx context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = append(r.names, name)
	return nil
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	svc       *enroll.Service
	db        *sqlstore.DB
	ca        *testCA
	prov      *fakeProvider
	registrar *fakeRegistrar
	clock     *clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := sqlstoretest.Open(t)
	e := &env{
		db:        db,
		ca:        newTestCA(t),
		prov:      newFakeProvider(),
		registrar: &fakeRegistrar{},
		clock:     &clock{t: time.UnixMilli(1_700_000_000_000).UTC()},
	}
	e.prov.things["core-1"] = provider.Thing{Name: "core-1", Policies: []string{"GreengrassCore", "TokenExchange"}}
	e.prov.things["core-2"] = provider.Thing{Name: "core-2"}
	e.svc = enroll.New(enroll.Config{
		Store:     db,
		Cores:     fakeCores{"core-1": "ca-of-core-1", "core-2": "", "no-thing": ""},
		Issuer:    e.ca,
		Provider:  e.prov,
		Registrar: e.registrar,
		ServerCAPEM: func(ctx context.Context) (string, error) {
			return "SERVER CA PEM", nil
		},
		Config: func(ctx context.Context, core string) (string, error) {
			return "system:\n  thingName: " + core + "\n", nil
		},
		MQTTEndpoint: "broker.example:8883",
		BrokerURL:    "https://broker.example:8080",
		Now:          e.clock.Now,
	})
	return e
}

// csr makes a device key and its CSR; the key stays in the test ("on the device").
func csr(t *testing.T, cn string) (crypto.Signer, string) {
	t.Helper()
	key, err := certs.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	pemText, err := certs.NewCSR(key, cn)
	if err != nil {
		t.Fatal(err)
	}
	return key, pemText
}

func (e *env) token(t *testing.T, core string) string {
	t.Helper()
	tok, err := e.svc.CreateToken(context.Background(), core, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

func TestCreateToken(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	now := e.clock.Now()

	t.Run("default lifetime, stored hashed", func(t *testing.T) {
		tok, err := e.svc.CreateToken(ctx, "core-1", 0)
		if err != nil {
			t.Fatal(err)
		}
		if tok.CoreName != "core-1" || !tok.ExpiresAt.Equal(now.Add(24*time.Hour)) {
			t.Errorf("token = %+v, want core-1 expiring at %v", tok, now.Add(24*time.Hour))
		}
		if !strings.HasPrefix(tok.Token, enroll.TokenPrefix) {
			t.Errorf("token %q lacks prefix %q", tok.Token, enroll.TokenPrefix)
		}
		var hash string
		if err := e.db.SQL().QueryRowContext(ctx, `SELECT hash FROM enrollment_tokens WHERE core_name = 'core-1'`).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(tok.Token))
		if hash != hex.EncodeToString(sum[:]) {
			t.Errorf("stored %q, want the SHA-256 of the token", hash)
		}
	})

	tests := []struct {
		name      string
		core      string
		expiresIn time.Duration
		kind      errkind.Kind
		msg       string
	}{
		{"unknown core", "nope", 0, errkind.NotFound, `core "nope" does not exist: create it with POST /coreTasks first`},
		{"bad name", "a:b", 0, errkind.Invalid, "is not valid"},
		{"too short", "core-1", 59 * time.Second, errkind.Invalid, "expiresInSeconds must be from 60 to 2592000"},
		{"too long", "core-1", 31 * 24 * time.Hour, errkind.Invalid, "got 2678400"},
		{"negative", "core-1", -time.Hour, errkind.Invalid, "expiresInSeconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.CreateToken(ctx, tt.core, tt.expiresIn)
			if errkind.KindOf(err) != tt.kind || !strings.Contains(errkind.Message(err), tt.msg) {
				t.Errorf("err = %v (kind %d), want kind %d containing %q", err, errkind.KindOf(err), tt.kind, tt.msg)
			}
		})
	}

	t.Run("bounds are inclusive", func(t *testing.T) {
		for _, d := range []time.Duration{enroll.MinTokenLifetime, enroll.MaxTokenLifetime} {
			tok, err := e.svc.CreateToken(ctx, "core-2", d)
			if err != nil {
				t.Fatalf("CreateToken(%v) = %v", d, err)
			}
			if !tok.ExpiresAt.Equal(now.Add(d)) {
				t.Errorf("ExpiresAt = %v, want %v", tok.ExpiresAt, now.Add(d))
			}
		}
	})
}

func TestEnroll(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	key, csrPem := csr(t, "whatever-the-device-says")
	resp, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: e.token(t, "core-1"), CsrPem: csrPem})
	if err != nil {
		t.Fatal(err)
	}

	cert, err := certs.ParseCertificate(resp.CertificatePem)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "core-1" {
		t.Errorf("CN = %q, want the core name", cert.Subject.CommonName)
	}
	pool := x509.NewCertPool()
	pool.AddCert(e.ca.cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not verify against the CA: %v", err)
	}
	if !reflect.DeepEqual(cert.PublicKey, key.Public()) {
		t.Error("certificate is not for the CSR's key")
	}
	if e.ca.caIDs[0] != "ca-of-core-1" {
		t.Errorf("issued by CA %q, want the core's CA", e.ca.caIDs[0])
	}

	want := enroll.Response{
		ThingName:              "core-1",
		CertificatePem:         resp.CertificatePem,
		CaCertificatePem:       e.ca.pem,
		ServerCaCertificatePem: "SERVER CA PEM",
		InstallerConfig:        "system:\n  thingName: core-1\n",
		MQTTEndpoint:           "broker.example:8883",
		BrokerURL:              "https://broker.example:8080",
		Mode:                   "local",
	}
	if resp != want {
		t.Errorf("response = %+v\nwant %+v", resp, want)
	}

	id := certs.ID(cert)
	if got := e.prov.certStatus[id]; got != "ACTIVE" {
		t.Errorf("certificate status = %q, want ACTIVE", got)
	}
	if got := e.prov.principals["core-1"]; !slices.Equal(got, []string{id}) {
		t.Errorf("principals of core-1 = %v, want [%s]", got, id)
	}
	if got := e.prov.attached[id]; !slices.Equal(got, []string{"GreengrassCore", "TokenExchange"}) {
		t.Errorf("policies of the certificate = %v, want the thing's policies", got)
	}
	if !slices.Equal(e.registrar.names, []string{"core-1"}) {
		t.Errorf("registrar calls = %v, want [core-1]", e.registrar.names)
	}
}

func TestEnrollDefaultCA(t *testing.T) {
	e := newEnv(t)
	_, csrPem := csr(t, "core-2")
	if _, err := e.svc.Enroll(context.Background(), enroll.Request{CoreName: "core-2", Token: e.token(t, "core-2"), CsrPem: csrPem}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.ca.caIDs, []string{""}) {
		t.Errorf("Issue caIDs = %q, want the default CA (\"\")", e.ca.caIDs)
	}
}

func TestEnrollCarriesNoPrivateKey(t *testing.T) {
	// The request carries only a name, the token and a CSR: no field could
	// hold a private key.
	var fields []string
	rt := reflect.TypeFor[enroll.Request]()
	for i := range rt.NumField() {
		fields = append(fields, rt.Field(i).Tag.Get("json"))
	}
	if !slices.Equal(fields, []string{"coreName", "token", "csrPem"}) {
		t.Errorf("Request fields = %v, want [coreName token csrPem]", fields)
	}
	e := newEnv(t)
	_, csrPem := csr(t, "core-1")
	resp, err := e.svc.Enroll(context.Background(), enroll.Request{CoreName: "core-1", Token: e.token(t, "core-1"), CsrPem: csrPem})
	if err != nil {
		t.Fatal(err)
	}
	rv := reflect.ValueOf(resp)
	for i := range rv.NumField() {
		if strings.Contains(rv.Field(i).String(), "PRIVATE KEY") {
			t.Errorf("response field %s holds a private key", rv.Type().Field(i).Name)
		}
	}
}

func TestEnrollRejects(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	_, good := csr(t, "core-1")
	used := e.token(t, "core-1")
	if _, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: used, CsrPem: good}); err != nil {
		t.Fatal(err)
	}
	expired, err := e.svc.CreateToken(ctx, "core-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fresh := e.token(t, "core-1")
	forCore2 := e.token(t, "core-2")
	e.clock.Advance(time.Minute) // expires `expired`, exactly at its end

	rsaKey, err := certs.GenerateKey(certs.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR, err := certs.NewCSR(rsaKey, "core-1")
	if err != nil {
		t.Fatal(err)
	}
	tampered := strings.Replace(good, good[100:104], "AAAA", 1)

	tests := []struct {
		name string
		req  enroll.Request
		kind errkind.Kind
		msg  string
	}{
		{"used token", enroll.Request{"core-1", used, good}, errkind.Unauthorized, "enrollment token has already been used"},
		{"expired token", enroll.Request{"core-1", expired.Token, good}, errkind.Unauthorized, "enrollment token has expired"},
		{"wrong core", enroll.Request{"core-1", forCore2, good}, errkind.Unauthorized, `enrollment token is not valid for core "core-1"`},
		{"unknown token", enroll.Request{"core-1", enroll.TokenPrefix + "nope", good}, errkind.Unauthorized, "enrollment token is not valid"},
		{"API-token-looking garbage", enroll.Request{"core-1", "ggf_x", good}, errkind.Unauthorized, "enrollment token is not valid"},
		{"bad core name", enroll.Request{"core:1", fresh, good}, errkind.Invalid, "coreName"},
		{"missing token", enroll.Request{"core-1", " ", good}, errkind.Invalid, "token is required"},
		{"missing CSR", enroll.Request{"core-1", fresh, ""}, errkind.Invalid, "csrPem is required"},
		{"not PEM", enroll.Request{"core-1", fresh, "hello"}, errkind.Invalid, "csrPem is not a valid certificate signing request"},
		{"a certificate, not a CSR", enroll.Request{"core-1", fresh, e.ca.pem}, errkind.Invalid, "csrPem is not a valid certificate signing request"},
		{"tampered CSR", enroll.Request{"core-1", fresh, tampered}, errkind.Invalid, "csrPem is not a valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.Enroll(ctx, tt.req)
			if errkind.KindOf(err) != tt.kind || !strings.Contains(errkind.Message(err), tt.msg) {
				t.Errorf("err = %v (kind %d), want kind %d containing %q", err, errkind.KindOf(err), tt.kind, tt.msg)
			}
		})
	}

	t.Run("rejections spent nothing", func(t *testing.T) {
		if _, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: fresh, CsrPem: rsaCSR}); err != nil {
			t.Errorf("fresh token after rejected requests: %v", err)
		}
	})
}

func TestEnrollFailureLeavesTokenUsable(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		break_ func(e *env)
		fix    func(e *env)
		kind   errkind.Kind
		msg    string
	}{
		{
			name:   "thing missing",
			break_: func(e *env) { delete(e.prov.things, "core-1") },
			fix:    func(e *env) { e.prov.things["core-1"] = provider.Thing{Name: "core-1"} },
			kind:   errkind.Invalid,
			msg:    `core "core-1" has no thing in the registry`,
		},
		{
			name:   "policy attach fails",
			break_: func(e *env) { e.prov.failPolicy = errkind.New(errkind.NotFound, "policy not found") },
			fix:    func(e *env) { e.prov.failPolicy = nil },
			kind:   errkind.NotFound,
		},
		{
			name:   "CA fails",
			break_: func(e *env) { e.ca.fail = errors.New("CA key unavailable") },
			fix:    func(e *env) { e.ca.fail = nil },
			kind:   errkind.Other,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			tok := e.token(t, "core-1")
			_, csrPem := csr(t, "core-1")
			tt.break_(e)
			_, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: tok, CsrPem: csrPem})
			if err == nil || errkind.KindOf(err) != tt.kind || !strings.Contains(errkind.Message(err), tt.msg) {
				t.Fatalf("err = %v (kind %d), want kind %d containing %q", err, errkind.KindOf(err), tt.kind, tt.msg)
			}
			if len(e.registrar.names) != 0 {
				t.Errorf("core marked registered after a failed enrollment")
			}
			tt.fix(e)
			if _, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: tok, CsrPem: csrPem}); err != nil {
				t.Errorf("retry with the same token after the fix: %v", err)
			}
		})
	}
}

func TestEnrollCrashedClaimExpires(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	tok := e.token(t, "core-1")
	_, csrPem := csr(t, "core-1")
	// A broker that crashed mid-enrollment left its claim behind.
	sum := sha256.Sum256([]byte(tok))
	won, err := e.db.ClaimEnrollmentToken(ctx, hex.EncodeToString(sum[:]), e.clock.Now(), e.clock.Now().Add(-5*time.Minute))
	if err != nil || !won {
		t.Fatalf("ClaimEnrollmentToken = %v, %v", won, err)
	}
	e.clock.Advance(time.Minute)
	_, err = e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: tok, CsrPem: csrPem})
	if !errkind.Is(err, errkind.Unauthorized) || !strings.Contains(errkind.Message(err), "in progress") {
		t.Fatalf("enroll during the claim: err = %v, want Unauthorized … in progress", err)
	}
	e.clock.Advance(5 * time.Minute)
	if _, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: tok, CsrPem: csrPem}); err != nil {
		t.Fatalf("enroll after the claim expired: %v", err)
	}
}

func TestEnrollRaceHasOneWinner(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	tok := e.token(t, "core-1")
	const n = 8
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		wins     int
		failures []error
	)
	for range n {
		_, csrPem := csr(t, "core-1")
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: tok, CsrPem: csrPem})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			} else {
				failures = append(failures, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d enrollments succeeded with one token, want 1", wins)
	}
	for _, err := range failures {
		if !errkind.Is(err, errkind.Unauthorized) {
			t.Errorf("loser err = %v, want Unauthorized", err)
		}
	}
	if got := len(e.prov.principals["core-1"]); got != 1 {
		t.Errorf("%d certificates attached, want 1", got)
	}
}
