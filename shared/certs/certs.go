// Package certs holds the certificate helpers both halves agree on: key
// generation (ECDSA P-256 by default, RSA-2048 on request), PEM encoding,
// CSRs, and certificate ids (hex SHA-256 of the DER, as AWS IoT does). Keys
// are generated where they are used; nothing here logs or stores them.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Key algorithms, as named by certInfo.keyAlgorithm.
const (
	ECP256  = "EC-P256"
	RSA2048 = "RSA-2048"
)

// GenerateKey makes a private key of the named algorithm ("" means EC-P256).
func GenerateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case "", ECP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return nil, fmt.Errorf("unsupported key algorithm %q: use %s or %s", alg, ECP256, RSA2048)
}

// CheckAlgorithm reports whether alg names a supported key algorithm ("" allowed).
func CheckAlgorithm(alg string) error {
	switch alg {
	case "", ECP256, RSA2048:
		return nil
	}
	return fmt.Errorf("unsupported key algorithm %q: use %s or %s", alg, ECP256, RSA2048)
}

// Algorithm names the algorithm of a public key, or "" if unsupported.
func Algorithm(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return ECP256
		}
	case *rsa.PublicKey:
		if k.N.BitLen() == 2048 {
			return RSA2048
		}
	}
	return ""
}

// EncodeKey returns the PKCS#8 PEM ("PRIVATE KEY") of a private key.
func EncodeKey(key crypto.Signer) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("encode private key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// ParseKey reads a PEM private key (PKCS#8, SEC 1 EC or PKCS#1 RSA).
func ParseKey(pemText string) (crypto.Signer, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("no PEM block found in private key")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unsupported private key PEM type %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("private key cannot sign")
	}
	return s, nil
}

// EncodeCertificate returns the PEM of a DER certificate.
func EncodeCertificate(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// ParseCertificate reads the first certificate of a PEM text.
func ParseCertificate(pemText string) (*x509.Certificate, error) {
	der, err := firstCertificate(pemText)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return c, nil
}

// IDOfPEM is the ID of the first certificate of a PEM text, computed without
// parsing the certificate: for certificates this process made itself.
func IDOfPEM(pemText string) (string, error) {
	der, err := firstCertificate(pemText)
	if err != nil {
		return "", err
	}
	return idOf(der), nil
}

// ID is a certificate's id: the hex SHA-256 of its DER (AWS IoT's certificateId form).
func ID(c *x509.Certificate) string {
	return idOf(c.Raw)
}

func idOf(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// firstCertificate returns the DER of the first CERTIFICATE block of a PEM text.
func firstCertificate(pemText string) ([]byte, error) {
	rest := []byte(pemText)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no CERTIFICATE PEM block found")
		}
		if block.Type == "CERTIFICATE" {
			return block.Bytes, nil
		}
	}
}

// NewCSR makes a PEM certificate signing request for key with the given common name.
func NewCSR(key crypto.Signer, commonName string) (string, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return "", fmt.Errorf("create CSR: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// ParseCSR reads a PEM CSR and checks its self-signature and key algorithm.
func ParseCSR(pemText string) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode([]byte(strings.TrimSpace(pemText)))
	if block == nil {
		return nil, errors.New("no PEM block found in the CSR")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("the CSR's PEM block is %q, want CERTIFICATE REQUEST", block.Type)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature is invalid: %w", err)
	}
	if Algorithm(csr.PublicKey) == "" {
		return nil, fmt.Errorf("the CSR's key is not supported: use %s or %s", ECP256, RSA2048)
	}
	return csr, nil
}
