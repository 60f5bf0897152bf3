package benchpki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestNew(t *testing.T) {
	p, err := New("test CA", []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Things) != 2 || len(p.Agents) != 2 || p.Things[1] != "b" || p.Agents[1].Leaf.Subject.CommonName != "b" {
		t.Fatalf("things %v, %d agent certificates", p.Things, len(p.Agents))
	}
	verify := func(name string, c *x509.Certificate, usage x509.ExtKeyUsage) {
		t.Helper()
		if _, err := c.Verify(x509.VerifyOptions{Roots: p.Pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("%s does not verify against the pool: %v", name, err)
		}
	}
	verify("server", p.Server.Leaf, x509.ExtKeyUsageServerAuth)
	verify("broker", p.Broker.Leaf, x509.ExtKeyUsageClientAuth)
	verify("agent a", p.Agents[0].Leaf, x509.ExtKeyUsageClientAuth)
	if err := p.Server.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	seen := map[string]bool{}
	for _, c := range append([]*x509.Certificate{p.Server.Leaf, p.Broker.Leaf}, p.Agents[0].Leaf, p.Agents[1].Leaf) {
		if seen[c.SerialNumber.String()] {
			t.Fatalf("serial %s issued twice", c.SerialNumber)
		}
		seen[c.SerialNumber.String()] = true
	}

	dir := t.TempDir()
	if err := p.WriteMosquittoFiles(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.pem", "crl.pem"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || len(b) == 0 {
			t.Errorf("%s: %d bytes, %v", f, len(b), err)
		}
	}
}
