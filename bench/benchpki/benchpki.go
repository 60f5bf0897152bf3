// Package benchpki makes the throwaway certificate authority and mutual-TLS
// certificates the MQTT benchmarks need when they run a broker without
// ggfleet's database (mqttbench, fleetbench's physical bound): EC P-256
// like ggfleet's, valid for a day, kept in memory.
package benchpki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a CA and the certificates it issued.
type PKI struct {
	CA     *x509.Certificate
	CAKey  *ecdsa.PrivateKey
	Pool   *x509.CertPool  // holds CA: what clients and servers verify against
	Server tls.Certificate // a server certificate for 127.0.0.1
	Broker tls.Certificate // ggfleet's client certificate at Mosquitto (CN ggfleet.broker)
	Things []string        // the simulated things, in order
	Agents []tls.Certificate
}

// New makes a CA named caName and, besides Server and Broker, one client
// certificate per thing (CN = the thing name).
func New(caName string, things []string) (*PKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("make the CA key: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: caName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("make the CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse the CA certificate: %w", err)
	}
	p := &PKI{CA: ca, CAKey: key, Pool: x509.NewCertPool()}
	p.Pool.AddCert(ca)
	if p.Server, err = p.issue(2, "127.0.0.1", true); err != nil {
		return nil, err
	}
	if p.Broker, err = p.issue(3, "ggfleet.broker", false); err != nil {
		return nil, err
	}
	for i, name := range things {
		c, err := p.issue(int64(10+i), name, false)
		if err != nil {
			return nil, err
		}
		p.Things = append(p.Things, name)
		p.Agents = append(p.Agents, c)
	}
	return p, nil
}

// issue makes a key and a certificate for cn: a server certificate for
// 127.0.0.1, or a client certificate.
func (p *PKI) issue(serial int64, cn string, server bool) (tls.Certificate, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("make the key of %s: %w", cn, err)
	}
	t := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		t.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, t, p.CA, k.Public(), p.CAKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certify %s: %w", cn, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse the certificate of %s: %w", cn, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}, nil
}

// WriteMosquittoFiles writes ca.pem and an empty crl.pem into dir, as
// ggfleet's --mqtt-ca-file and --mqtt-crl-file would for Mosquitto.
func (p *PKI) WriteMosquittoFiles(dir string) error {
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(24 * time.Hour)}, p.CA, p.CAKey)
	if err != nil {
		return fmt.Errorf("make the CRL: %w", err)
	}
	for name, block := range map[string]*pem.Block{"ca.pem": {Type: "CERTIFICATE", Bytes: p.CA.Raw}, "crl.pem": {Type: "X509 CRL", Bytes: crl}} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// AllowAll is an MQTT authorizer that admits every certificate: the
// benchmarks' brokers have no database of revoked certificates.
type AllowAll struct{}

// CertificateActive reports every certificate active.
func (AllowAll) CertificateActive(context.Context, string) (bool, error) { return true, nil }
