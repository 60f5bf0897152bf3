package enroll_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/enroll"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// cloudProvider is fakeProvider with the aws provider's CSR signing and
// certificate deletion: the cloud (here testCA) certifies the CSR's key
// and keeps the CSR's subject, as AWS IoT does.
type cloudProvider struct {
	*fakeProvider
	ca      *testCA
	signed  int
	deleted []string
}

func (p *cloudProvider) Mode() string { return "aws" }

func (p *cloudProvider) CreateCertificateFromCsr(_ context.Context, csrPEM string) (string, string, error) {
	csr, err := certs.ParseCSR(csrPEM)
	if err != nil {
		return "", "", errkind.Wrap(errkind.Invalid, err, "bad CSR")
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(p.signed + 100)), Subject: csr.Subject,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca.cert, csr.PublicKey, p.ca.key)
	if err != nil {
		return "", "", err
	}
	pemText := certs.EncodeCertificate(der)
	c, err := certs.ParseCertificate(pemText)
	if err != nil {
		return "", "", err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.signed++
	id := certs.ID(c)
	p.certs[id], p.certStatus[id] = pemText, "ACTIVE"
	return id, pemText, nil
}

func (p *cloudProvider) DeleteCertificate(_ context.Context, certID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deleted = append(p.deleted, certID)
	delete(p.certs, certID)
	return nil
}

func newCloudEnv(t *testing.T) (*env, *cloudProvider) {
	t.Helper()
	e := newEnv(t)
	cloud := &cloudProvider{fakeProvider: e.prov, ca: newTestCA(t)}
	e.svc = enroll.New(enroll.Config{
		Store: e.db, Cores: fakeCores{"core-1": "ca-of-core-1"}, Issuer: e.ca, Provider: cloud,
		ServerCAPEM: func(context.Context) (string, error) { return "SERVER CA PEM", nil },
		Config:      func(_ context.Context, core string) (string, error) { return "thingName: " + core, nil },
		Now:         e.clock.Now,
	})
	return e, cloud
}

func TestEnrollWithCloudCSRSigning(t *testing.T) {
	ctx := context.Background()
	e, cloud := newCloudEnv(t)
	key, csrPEM := csr(t, "core-1")
	resp, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: e.token(t, "core-1"), CsrPem: csrPEM})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Mode != "aws" || cloud.signed != 1 {
		t.Fatalf("mode %q, %d CreateCertificateFromCsr calls", resp.Mode, cloud.signed)
	}
	if len(e.ca.caIDs) != 0 {
		t.Errorf("the broker's CA issued %d certificates in aws mode", len(e.ca.caIDs))
	}
	c, err := certs.ParseCertificate(resp.CertificatePem)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "core-1" || !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) {
		t.Errorf("certificate subject %q, or not for the device's key", c.Subject.CommonName)
	}
	// The agent checks the certificate against caCertificatePem.
	roots := x509.NewCertPool()
	ca, _ := certs.ParseCertificate(resp.CaCertificatePem)
	roots.AddCert(ca)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("certificate does not verify against caCertificatePem: %v", err)
	}
	id := certs.ID(c)
	if !slices.Contains(e.prov.principals["core-1"], id) || !slices.Equal(e.prov.attached[id], []string{"GreengrassCore", "TokenExchange"}) {
		t.Errorf("principals %v, policies %v", e.prov.principals["core-1"], e.prov.attached[id])
	}
}

func TestEnrollCloudRefusesOtherCommonName(t *testing.T) {
	ctx := context.Background()
	e, cloud := newCloudEnv(t)
	tok := e.token(t, "core-1")
	for _, cn := range []string{"core-2", "", "AWS IoT Certificate"} {
		_, csrPEM := csr(t, cn)
		_, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: tok, CsrPem: csrPEM})
		if !errkind.Is(err, errkind.Invalid) || !strings.Contains(errkind.Message(err), `must be the core name "core-1"`) {
			t.Errorf("CN %q: err = %v, want Invalid naming the core", cn, err)
		}
	}
	if cloud.signed != 0 {
		t.Errorf("%d certificates were made for refused CSRs", cloud.signed)
	}
	// The token is still usable.
	_, csrPEM := csr(t, "core-1")
	if _, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: tok, CsrPem: csrPEM}); err != nil {
		t.Fatalf("enroll after refusals: %v", err)
	}
}

func TestEnrollCloudDeletesCertificateOnFailure(t *testing.T) {
	ctx := context.Background()
	e, cloud := newCloudEnv(t)
	e.prov.failPolicy = errors.New("attach policy: injected")
	tok := e.token(t, "core-1")
	_, csrPEM := csr(t, "core-1")
	if _, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: tok, CsrPem: csrPEM}); err == nil {
		t.Fatal("enroll succeeded with AttachPolicy failing")
	}
	if cloud.signed != 1 || len(cloud.deleted) != 1 || len(e.prov.certs) != 0 {
		t.Fatalf("signed %d, deleted %v, left %d certificates", cloud.signed, cloud.deleted, len(e.prov.certs))
	}
	e.prov.failPolicy = nil
	if _, err := e.svc.Enroll(ctx, enroll.Request{CoreName: "core-1", Token: tok, CsrPem: csrPEM}); err != nil {
		t.Fatalf("retry with the same token: %v", err)
	}
}
