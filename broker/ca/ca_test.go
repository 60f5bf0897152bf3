package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/certs"
)

func testKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, SecretsKeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func newTestAuthority(t *testing.T, store Store, key []byte) *Authority {
	t.Helper()
	return New(Config{Store: store, SecretsKey: key})
}

// initialised returns an Authority over a fresh store with its default CA.
func initialised(t *testing.T) (*Authority, *memStore, CA) {
	t.Helper()
	store := newMemStore()
	a := newTestAuthority(t, store, testKey(t))
	def, created, err := a.Init(context.Background())
	if err != nil || !created {
		t.Fatalf("Init = %v, %v", created, err)
	}
	return a, store, def
}

// caOpts describe a CA certificate made outside the Authority, for Import.
type caOpts struct {
	alg       string
	notCA     bool
	notBefore time.Time
	notAfter  time.Time
	usage     x509.KeyUsage
}

// makeCA returns the PEM certificate and PKCS#8 PEM key of a self-signed certificate.
func makeCA(t *testing.T, o caOpts) (certPEM, keyPEM string, key crypto.Signer) {
	t.Helper()
	key, err := certs.GenerateKey(o.alg)
	if err != nil {
		t.Fatal(err)
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().AddDate(1, 0, 0)
	}
	if o.usage == 0 {
		o.usage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "imported " + o.alg, Organization: []string{"Example"}},
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		KeyUsage:              o.usage,
		BasicConstraintsValid: true,
		IsCA:                  !o.notCA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = certs.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return certs.EncodeCertificate(der), keyPEM, key
}

func wantKind(t *testing.T, err error, kind errkind.Kind, msgPart string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want kind %d containing %q", kind, msgPart)
	}
	if errkind.KindOf(err) != kind {
		t.Fatalf("error %q has kind %d, want %d", err, errkind.KindOf(err), kind)
	}
	if !strings.Contains(err.Error(), msgPart) {
		t.Fatalf("error %q does not contain %q", err, msgPart)
	}
}

func TestInit(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	key := testKey(t)
	a := newTestAuthority(t, store, key)

	if _, err := a.Default(ctx); !errkind.Is(err, errkind.NotFound) {
		t.Fatalf("Default before Init = %v, want NotFound", err)
	}
	def, created, err := a.Init(ctx)
	if err != nil || !created {
		t.Fatalf("Init = %v, %v; want created", created, err)
	}
	cert, err := certs.ParseCertificate(def.CertificatePem)
	if err != nil {
		t.Fatal(err)
	}
	if def.ID != certs.ID(cert) || def.Subject != "CN=ggfleet default CA" || !def.Default || def.KeyAlgorithm != certs.ECP256 {
		t.Fatalf("default CA = %+v", def)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatal("default CA certificate is not a CA")
	}
	if years := time.Until(cert.NotAfter).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Fatalf("default CA valid for %.1f years, want 10", years)
	}

	again, created, err := a.Init(ctx)
	if err != nil || created || again.ID != def.ID {
		t.Fatalf("second Init = %+v, %v, %v", again, created, err)
	}
	// Another replica with the same secrets key adopts the stored CA.
	other := newTestAuthority(t, store, key)
	got, created, err := other.Init(ctx)
	if err != nil || created || got.ID != def.ID {
		t.Fatalf("other replica's Init = %+v, %v, %v", got, created, err)
	}
	// A replica with another secrets key cannot use it, and says why.
	wrong := newTestAuthority(t, store, testKey(t))
	if _, _, err := wrong.Init(ctx); err == nil || !strings.Contains(err.Error(), "secrets key does not match") {
		t.Fatalf("Init with a wrong secrets key = %v", err)
	}
	if _, _, err := wrong.Issue(ctx, "", mustKey(t, "").Public(), pkix.Name{CommonName: "x"}, 0); err == nil || !strings.Contains(err.Error(), "secrets key does not match") {
		t.Fatalf("Issue with a wrong secrets key = %v", err)
	}
}

func TestInitRace(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	key := testKey(t)
	const n = 8
	ids := make([]string, n)
	createdCount := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			def, created, err := newTestAuthority(t, store, key).Init(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[i] = def.ID
			if created {
				createdCount++
			}
		})
	}
	wg.Wait()
	if createdCount != 1 {
		t.Fatalf("%d replicas created a default CA, want 1", createdCount)
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("replicas disagree on the default CA: %v", ids)
		}
	}
}

func TestEncryptionAtRest(t *testing.T) {
	ctx := context.Background()
	a, store, _ := initialised(t)
	certPEM, keyPEM, key := makeCA(t, caOpts{alg: certs.RSA2048})
	imported, err := a.Import(ctx, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.GetCA(ctx, imported.ID)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	body := pemBody(t, keyPEM)
	for name, secret := range map[string][]byte{"PEM": []byte(keyPEM), "PEM body": []byte(body[:40]), "DER": der, "DER tail": der[len(der)-64:]} {
		if bytes.Contains(rec.EncryptedKey, secret) {
			t.Errorf("the stored key blob contains the key's %s", name)
		}
	}
	if bytes.Contains(rec.EncryptedKey, []byte("PRIVATE KEY")) {
		t.Error("the stored key blob contains a PEM header")
	}
	// The blob opens with the right key and CA id only.
	if _, err := open(a.secretsKey, imported.ID, rec.EncryptedKey); err != nil {
		t.Fatalf("open with the right key: %v", err)
	}
	if _, err := open(testKey(t), imported.ID, rec.EncryptedKey); err == nil || !strings.Contains(err.Error(), "secrets key does not match") {
		t.Fatalf("open with a wrong key = %v", err)
	}
	if _, err := open(a.secretsKey, "another-ca", rec.EncryptedKey); err == nil {
		t.Fatal("a key blob opened under another CA id")
	}
	// Two seals of the same key differ (random nonce).
	b1, _ := seal(a.secretsKey, "id", der)
	b2, _ := seal(a.secretsKey, "id", der)
	if bytes.Equal(b1, b2) {
		t.Fatal("two seals of one key are equal: the nonce is not random")
	}
	if _, err := seal([]byte("short"), "id", der); err == nil {
		t.Fatal("seal accepted a 5-byte secrets key")
	}
}

func pemBody(t *testing.T, s string) string {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatal("not PEM")
	}
	return base64.StdEncoding.EncodeToString(b.Bytes)
}

func TestGenerate(t *testing.T) {
	ctx := context.Background()
	a, _, _ := initialised(t)
	tests := []struct {
		name     string
		cn       string
		days     int
		alg      string
		wantAlg  string
		wantDays int
		wantErr  string
	}{
		{name: "defaults", cn: "fleet CA", wantAlg: certs.ECP256, wantDays: 3650},
		{name: "RSA", cn: "rsa CA", days: 30, alg: certs.RSA2048, wantAlg: certs.RSA2048, wantDays: 30},
		{name: "EC", cn: "ec CA", days: 1, alg: certs.ECP256, wantAlg: certs.ECP256, wantDays: 1},
		{name: "empty name", cn: "  ", wantErr: "commonName is required"},
		{name: "long name", cn: strings.Repeat("x", 65), wantErr: "at most 64"},
		{name: "negative days", cn: "x", days: -1, wantErr: "daysExpiry must be from 1"},
		{name: "too many days", cn: "x", days: 40000, wantErr: "daysExpiry must be from 1"},
		{name: "bad algorithm", cn: "x", alg: "DSA", wantErr: `keyAlgorithm "DSA" is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Generate(ctx, tt.cn, tt.days, tt.alg)
			if tt.wantErr != "" {
				wantKind(t, err, errkind.Invalid, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Default || got.KeyAlgorithm != tt.wantAlg || got.Subject != "CN="+tt.cn {
				t.Fatalf("generated %+v", got)
			}
			days := time.Until(got.NotAfter).Hours() / 24
			if days < float64(tt.wantDays)-1 || days > float64(tt.wantDays)+1 {
				t.Fatalf("valid for %.1f days, want %d", days, tt.wantDays)
			}
			stored, err := a.Get(ctx, got.ID)
			if err != nil || stored != got {
				t.Fatalf("Get = %+v, %v; want %+v", stored, err, got)
			}
		})
	}
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	a, _, _ := initialised(t)
	now := time.Now()

	ecCert, ecKey, _ := makeCA(t, caOpts{alg: certs.ECP256})
	rsaCert, rsaKey, _ := makeCA(t, caOpts{alg: certs.RSA2048})
	_, otherKey, _ := makeCA(t, caOpts{alg: certs.ECP256})
	leafCert, leafKey, _ := makeCA(t, caOpts{alg: certs.ECP256, notCA: true})
	oldCert, oldKey, _ := makeCA(t, caOpts{notBefore: now.AddDate(-2, 0, 0), notAfter: now.AddDate(-1, 0, 0)})
	noSignCert, noSignKey, _ := makeCA(t, caOpts{usage: x509.KeyUsageDigitalSignature})
	// The same EC CA with its key in SEC 1 form ("EC PRIVATE KEY").
	sec1Cert, _, sec1Signer := makeCA(t, caOpts{alg: certs.ECP256})
	sec1DER, err := x509.MarshalECPrivateKey(sec1Signer.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1Key := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER}))

	tests := []struct {
		name     string
		cert     string
		key      string
		wantAlg  string
		wantKind errkind.Kind
		wantErr  string
	}{
		{name: "EC", cert: ecCert, key: ecKey, wantAlg: certs.ECP256},
		{name: "RSA", cert: rsaCert, key: rsaKey, wantAlg: certs.RSA2048},
		{name: "SEC 1 key", cert: sec1Cert, key: sec1Key, wantAlg: certs.ECP256},
		{name: "again", cert: ecCert, key: ecKey, wantKind: errkind.Conflict, wantErr: "already imported"},
		{name: "no certificate", cert: "", key: ecKey, wantKind: errkind.Invalid, wantErr: "certificatePem is required"},
		{name: "no key", cert: ecCert, key: "", wantKind: errkind.Invalid, wantErr: "privateKeyPem is required"},
		{name: "garbage certificate", cert: "hello", key: ecKey, wantKind: errkind.Invalid, wantErr: "certificatePem is not a PEM certificate"},
		{name: "garbage key", cert: ecCert, key: "hello", wantKind: errkind.Invalid, wantErr: "privateKeyPem is not a PEM private key"},
		{name: "wrong key", cert: ecCert, key: otherKey, wantKind: errkind.Invalid, wantErr: "does not belong to the certificate"},
		{name: "wrong key type", cert: ecCert, key: rsaKey, wantKind: errkind.Invalid, wantErr: "does not belong to the certificate"},
		{name: "not a CA", cert: leafCert, key: leafKey, wantKind: errkind.Invalid, wantErr: "is not a CA certificate"},
		{name: "expired", cert: oldCert, key: oldKey, wantKind: errkind.Invalid, wantErr: "expired on"},
		{name: "cannot sign certificates", cert: noSignCert, key: noSignKey, wantKind: errkind.Invalid, wantErr: "lacks keyCertSign"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Import(ctx, tt.cert, tt.key)
			if tt.wantErr != "" {
				wantKind(t, err, tt.wantKind, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cert, _ := certs.ParseCertificate(tt.cert)
			if got.ID != certs.ID(cert) || got.Default || got.KeyAlgorithm != tt.wantAlg || !got.NotAfter.Equal(cert.NotAfter) {
				t.Fatalf("imported %+v", got)
			}
			// The imported CA signs.
			if _, _, err := a.Issue(ctx, got.ID, mustKey(t, "").Public(), pkix.Name{CommonName: "dev"}, 0); err != nil {
				t.Fatalf("Issue from the imported CA: %v", err)
			}
		})
	}
}

func mustKey(t *testing.T, alg string) crypto.Signer {
	t.Helper()
	k, err := certs.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestIssue(t *testing.T) {
	ctx := context.Background()
	a, _, def := initialised(t)
	rsaCA, err := a.Generate(ctx, "rsa CA", 0, certs.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	shortCA, err := a.Generate(ctx, "short CA", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := a.Pool(ctx)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		caID     string
		wantCA   CA
		keyAlg   string
		days     int
		wantDays float64
	}{
		{name: "default CA, EC device", caID: "", wantCA: def, keyAlg: certs.ECP256, wantDays: 365},
		{name: "default CA, RSA device", caID: def.ID, wantCA: def, keyAlg: certs.RSA2048, days: 30, wantDays: 30},
		{name: "RSA CA, EC device", caID: rsaCA.ID, wantCA: rsaCA, keyAlg: certs.ECP256, days: 2, wantDays: 2},
		{name: "RSA CA, RSA device", caID: rsaCA.ID, wantCA: rsaCA, keyAlg: certs.RSA2048, wantDays: 365},
		{name: "capped at the CA", caID: shortCA.ID, wantCA: shortCA, keyAlg: certs.ECP256, days: 365, wantDays: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := mustKey(t, tt.keyAlg)
			certPEM, caPEM, err := a.Issue(ctx, tt.caID, key.Public(), pkix.Name{CommonName: "core-1"}, tt.days)
			if err != nil {
				t.Fatal(err)
			}
			if caPEM != tt.wantCA.CertificatePem {
				t.Fatal("Issue returned the PEM of another CA")
			}
			cert, err := certs.ParseCertificate(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			if cert.Subject.CommonName != "core-1" || cert.IsCA {
				t.Fatalf("subject %q, IsCA %v", cert.Subject, cert.IsCA)
			}
			if !publicKeyEqual(key.Public(), cert.PublicKey) {
				t.Fatal("the certificate certifies another key")
			}
			if cert.KeyUsage != x509.KeyUsageDigitalSignature || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
				t.Fatalf("key usage %v, ext key usage %v", cert.KeyUsage, cert.ExtKeyUsage)
			}
			if cert.SerialNumber.BitLen() < 64 {
				t.Fatalf("serial %v is too short to be random 128-bit", cert.SerialNumber)
			}
			if cert.NotAfter.After(tt.wantCA.NotAfter) {
				t.Fatal("the certificate outlives its CA")
			}
			if days := time.Until(cert.NotAfter).Hours() / 24; days < tt.wantDays-1 || days > tt.wantDays+1 {
				t.Fatalf("valid for %.1f days, want %.0f", days, tt.wantDays)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatalf("the issued certificate does not verify against the pool: %v", err)
			}
		})
	}

	t.Run("errors", func(t *testing.T) {
		p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ec := mustKey(t, "").Public()
		_, _, err = a.Issue(ctx, "feedface", ec, pkix.Name{CommonName: "x"}, 0)
		wantKind(t, err, errkind.Invalid, `certificate authority "feedface" does not exist`)
		_, _, err = a.Issue(ctx, "", p384.Public(), pkix.Name{CommonName: "x"}, 0)
		wantKind(t, err, errkind.Invalid, "public key is not supported")
		_, _, err = a.Issue(ctx, "", ec, pkix.Name{CommonName: "x"}, -5)
		wantKind(t, err, errkind.Invalid, "validity must be from 1")
	})

	t.Run("expired CA", func(t *testing.T) {
		later := New(Config{Store: a.store, SecretsKey: a.secretsKey, Now: func() time.Time { return time.Now().AddDate(0, 0, 20) }})
		_, _, err := later.Issue(ctx, shortCA.ID, mustKey(t, "").Public(), pkix.Name{CommonName: "x"}, 0)
		wantKind(t, err, errkind.Invalid, "expired on")
	})

	t.Run("no default CA", func(t *testing.T) {
		empty := newTestAuthority(t, newMemStore(), testKey(t))
		_, _, err := empty.Issue(ctx, "", mustKey(t, "").Public(), pkix.Name{CommonName: "x"}, 0)
		wantKind(t, err, errkind.Unavailable, "no default certificate authority")
	})
}

func TestDefaultKeyAlgorithm(t *testing.T) {
	ctx := context.Background()
	a, _, def := initialised(t)
	rsaCA, err := a.Generate(ctx, "rsa", 0, certs.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ id, want string }{{"", certs.ECP256}, {def.ID, certs.ECP256}, {rsaCA.ID, certs.RSA2048}} {
		if got, err := a.DefaultKeyAlgorithm(ctx, tt.id); err != nil || got != tt.want {
			t.Errorf("DefaultKeyAlgorithm(%q) = %q, %v; want %q", tt.id, got, err, tt.want)
		}
	}
	_, err = a.DefaultKeyAlgorithm(ctx, "nope")
	wantKind(t, err, errkind.Invalid, `"nope" does not exist`)
}

func TestGetListPool(t *testing.T) {
	ctx := context.Background()
	a, _, def := initialised(t)
	_, err := a.Get(ctx, "nope")
	wantKind(t, err, errkind.NotFound, `certificate authority "nope" does not exist`)
	got, err := a.Default(ctx)
	if err != nil || got != def {
		t.Fatalf("Default = %+v, %v", got, err)
	}
	gen, err := a.Generate(ctx, "another", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	list, err := a.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0] != def || list[1] != gen {
		t.Fatalf("List = %+v", list)
	}
	pool, err := a.Pool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		cert, _ := certs.ParseCertificate(c.CertificatePem)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
			t.Errorf("CA %s is not in the pool: %v", c.Subject, err)
		}
	}
}

func TestServerCertificate(t *testing.T) {
	ctx := context.Background()
	a, _, _ := initialised(t)
	pool, err := a.Pool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := a.ServerCertificate(ctx, []string{"localhost", "127.0.0.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := tc.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := tc.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "example.com"}); err == nil {
		t.Error("the server certificate verifies for a host it was not issued for")
	}
	// It works as a TLS certificate: a handshake against the pool succeeds.
	checkHandshake(t, tc, pool, "localhost")

	same, err := a.ServerCertificate(ctx, []string{"::1", "localhost", "127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if same.Leaf.SerialNumber.Cmp(tc.Leaf.SerialNumber) != 0 {
		t.Error("the same host set was issued a new certificate instead of the cached one")
	}
	other, err := a.ServerCertificate(ctx, []string{"broker.example"})
	if err != nil {
		t.Fatal(err)
	}
	if other.Leaf.SerialNumber.Cmp(tc.Leaf.SerialNumber) == 0 {
		t.Error("another host set got the cached certificate")
	}
	_, err = a.ServerCertificate(ctx, []string{" "})
	wantKind(t, err, errkind.Invalid, "at least one host")
}

func checkHandshake(t *testing.T, server tls.Certificate, roots *x509.CertPool, host string) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{server}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.(*tls.Conn).Handshake()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: host})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.Close()
}

func TestLoadOrCreateSecretsKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	path := filepath.Join(dir, "secrets.key")
	key, err := LoadOrCreateSecretsKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != SecretsKeySize {
		t.Fatalf("key has %d bytes", len(key))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %v, want 0700", di.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if want := base64.StdEncoding.EncodeToString(key) + "\n"; string(raw) != want {
		t.Errorf("file holds %q, want %q (openssl rand -base64 32 form)", raw, want)
	}
	again, err := LoadOrCreateSecretsKey(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Fatalf("reload = %x, %v; want the same key", again, err)
	}

	tests := []struct{ name, content, wantErr string }{
		{"not base64", "not base64 at all!\n", "is not base64"},
		{"too short", base64.StdEncoding.EncodeToString(make([]byte, 16)) + "\n", "holds 16 bytes, want 32"},
		{"empty", "", "holds 0 bytes, want 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreateSecretsKey(p)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if b, _ := os.ReadFile(p); string(b) != tt.content {
				t.Fatal("a bad key file was overwritten")
			}
		})
	}
	t.Run("created at once by many", func(t *testing.T) {
		d := t.TempDir()
		p := filepath.Join(d, "secrets.key")
		keys := make([][]byte, 8)
		errs := make([]error, len(keys))
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() { keys[i], errs[i] = LoadOrCreateSecretsKey(p) })
		}
		wg.Wait()
		for i := range keys {
			if errs[i] != nil || !bytes.Equal(keys[i], keys[0]) {
				t.Fatalf("caller %d got %x, %v; every caller must get the one key on disk", i, keys[i], errs[i])
			}
		}
		if entries, _ := os.ReadDir(d); len(entries) != 1 {
			t.Fatalf("the directory holds %d entries, want only secrets.key (no temporary files left)", len(entries))
		}
	})
	t.Run("openssl form", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "k")
		want := bytes.Repeat([]byte{7}, 32)
		if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(want)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := LoadOrCreateSecretsKey(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %x, %v", got, err)
		}
	})
}

// TestPoolCache: Pool reuses its answer for PoolTTL (every MQTT handshake
// asks for it), sees a CA this Authority creates at once, and one another
// replica created after PoolTTL.
func TestPoolCache(t *testing.T) {
	a, store, _ := initialised(t)
	now := time.Now()
	a.now = func() time.Time { return now }
	ctx := context.Background()
	count := func() int {
		t.Helper()
		pool, err := a.Pool(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(pool.Subjects()) //lint:ignore SA1019 only counting the CAs of a pool we built
	}
	if got := count(); got != 1 {
		t.Fatalf("pool has %d CAs, want 1", got)
	}
	if _, err := a.Generate(ctx, "Second", 365, certs.ECP256); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != 2 {
		t.Fatalf("after Generate the pool has %d CAs, want 2 at once", got)
	}
	// Another replica adds a CA straight to the shared store.
	other := newTestAuthority(t, store, a.secretsKey)
	if _, err := other.Generate(ctx, "Third", 365, certs.ECP256); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != 2 {
		t.Fatalf("within PoolTTL the pool has %d CAs, want the cached 2", got)
	}
	now = now.Add(PoolTTL)
	if got := count(); got != 3 {
		t.Fatalf("after PoolTTL the pool has %d CAs, want 3", got)
	}
}
