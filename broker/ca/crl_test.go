package ca

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/shared/certs"
)

// revStore is an in-memory RevocationStore.
type revStore struct {
	mu   sync.Mutex
	list []Revoked
}

func (s *revStore) AddRevoked(_ context.Context, r Revoked) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.list {
		if x.CertID == r.CertID {
			return nil
		}
	}
	s.list = append(s.list, r)
	return nil
}

func (s *revStore) ListRevoked(context.Context) ([]Revoked, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.list), nil
}

// issueDevice issues a device certificate from the CA caID.
func issueDevice(t *testing.T, a *Authority, caID, cn string) (*x509.Certificate, Revoked) {
	t.Helper()
	key, err := certs.GenerateKey(certs.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := a.Issue(context.Background(), caID, key.Public(), pkix.Name{CommonName: cn}, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, Revoked{CertID: certs.ID(c), CertificatePem: certPEM, RevokedAt: time.Now()}
}

// readCRLs parses every CRL in a PEM file, by issuer CN.
func readCRLs(t *testing.T, path string) map[string]*x509.RevocationList {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*x509.RevocationList{}
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "X509 CRL" {
			t.Fatalf("block %q in the CRL file", block.Type)
		}
		crl, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out[crl.Issuer.CommonName] = crl
	}
	return out
}

func serials(crl *x509.RevocationList) []string {
	var out []string
	for _, e := range crl.RevokedCertificateEntries {
		out = append(out, e.SerialNumber.String())
	}
	return out
}

// Every CA gets a CRL signed by it (also an empty one); a revoked
// certificate is listed by its issuer only; the files are 0644.
func TestCRLFileListsRevokedCertificatesPerCA(t *testing.T) {
	ctx := context.Background()
	a, _, def := initialised(t)
	other, err := a.Generate(ctx, "second CA", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	c1, r1 := issueDevice(t, a, "", "core-1")
	c2, r2 := issueDevice(t, a, other.ID, "core-2")
	_, _ = issueDevice(t, a, "", "core-3") // never revoked

	dir := t.TempDir()
	store := &revStore{}
	f := NewCRLFile(CRLFileConfig{Authority: a, Store: store, CRLPath: filepath.Join(dir, "crl.pem"), CAPath: filepath.Join(dir, "ca.pem")})
	if err := f.Update(ctx); err != nil {
		t.Fatal(err)
	}
	crls := readCRLs(t, filepath.Join(dir, "crl.pem"))
	if len(crls) != 2 || len(serials(crls[DefaultCommonName])) != 0 || len(serials(crls["second CA"])) != 0 {
		t.Fatalf("before any revocation: %d CRLs %v", len(crls), crls)
	}

	r2.CAID = "" // an unknown issuer is found by signature
	if err := f.Revoke(ctx, []Revoked{r1, r2, r1}); err != nil {
		t.Fatal(err)
	}
	if err := f.Update(ctx); err != nil {
		t.Fatal(err)
	}
	crls = readCRLs(t, filepath.Join(dir, "crl.pem"))
	if got := serials(crls[DefaultCommonName]); !slices.Equal(got, []string{c1.SerialNumber.String()}) {
		t.Errorf("default CA's CRL lists %v, want only core-1's %s", got, c1.SerialNumber)
	}
	if got := serials(crls["second CA"]); !slices.Equal(got, []string{c2.SerialNumber.String()}) {
		t.Errorf("second CA's CRL lists %v, want only core-2's %s", got, c2.SerialNumber)
	}
	for name, ca := range map[string]string{DefaultCommonName: def.CertificatePem, "second CA": other.CertificatePem} {
		caCert, _ := certs.ParseCertificate(ca)
		if err := crls[name].CheckSignatureFrom(caCert); err != nil {
			t.Errorf("CRL of %s: %v", name, err)
		}
		if !crls[name].NextUpdate.After(time.Now().Add(7 * 24 * time.Hour)) {
			t.Errorf("CRL of %s expires %s: too soon for a broker that is down a while", name, crls[name].NextUpdate)
		}
	}
	bundle, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("ca.pem holds no certificate")
	}
	for _, c := range []*x509.Certificate{c1, c2} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("ca.pem does not verify %s: %v", c.Subject.CommonName, err)
		}
	}
	for _, name := range []string{"crl.pem", "ca.pem"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v, want 0644 (the MQTT broker runs as another user)", name, st.Mode().Perm())
		}
	}
}

// An unwritable path is reported by Run at once.
func TestCRLFileRunFailsOnBadPath(t *testing.T) {
	a, _, _ := initialised(t)
	f := NewCRLFile(CRLFileConfig{Authority: a, Store: &revStore{}, CRLPath: filepath.Join(t.TempDir(), "missing", "crl.pem")})
	if err := f.Run(context.Background()); err == nil {
		t.Fatal("Run with a path in a missing folder succeeded")
	}
}
