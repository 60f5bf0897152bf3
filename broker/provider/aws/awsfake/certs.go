package awsfake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// AWSIssuedSubject is the subject common name AWS IoT gives the
// certificates CreateKeysAndCertificate makes (it has no thing to name).
const AWSIssuedSubject = "AWS IoT Certificate"

// issuer is the fake's stand-in for the AWS-owned CA that signs the
// certificates CreateKeysAndCertificate and CreateCertificateFromCsr make.
// Like AWS's, it is one CA for every account: one per process.
type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// awsIssuer makes the process's fake AWS CA on first use.
var awsIssuer = sync.OnceValues(func() (*issuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "awsfake Amazon Web Services IoT CA", Organization: []string{"Amazon.com Inc."}, Locality: []string{"Seattle"}, Province: []string{"Washington"}, Country: []string{"US"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(30, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("make CA certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	return &issuer{cert: c, key: key}, nil
})

// IssuerPEM is the certificate of the CA that signs the certificates the
// fake makes (AWS does not publish its equivalent; tests use it to check
// chains).
func (f *Fake) IssuerPEM() (string, error) {
	ca, err := awsIssuer()
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})), nil
}

// issueLocked signs pub for subject (one year, client auth) and stores the
// certificate with status. Callers hold f.mu.
func (f *Fake) issueLocked(pub any, subject pkix.Name, status string) (*cert, *apiError) {
	ca, err := awsIssuer()
	if err != nil {
		return nil, errorf(http.StatusInternalServerError, "InternalFailureException", "%v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, errorf(http.StatusInternalServerError, "InternalFailureException", "%v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC), // AWS-issued certificates run to 2049
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, invalid("the public key cannot be certified: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errorf(http.StatusInternalServerError, "InternalFailureException", "%v", err)
	}
	c := &cert{id: certID(leaf), pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		status: status, created: now, modified: now, policies: map[string]bool{}}
	f.iot.certs[c.id] = c
	return c, nil
}

// setAsActive reads the setAsActive query member (a boolean; absent is false).
func setAsActive(r *http.Request) (string, *apiError) {
	v := r.URL.Query().Get("setAsActive")
	if v == "" {
		return "INACTIVE", nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return "", invalid("setAsActive '%s' must be true or false", v)
	}
	if b {
		return "ACTIVE", nil
	}
	return "INACTIVE", nil
}

// createKeysAndCertificate answers CreateKeysAndCertificate: a new RSA-2048
// key pair (PKCS#1, as AWS returns it) and a certificate for it with the
// subject AWS gives these, signed by the fake's CA.
func (f *Fake) createKeysAndCertificate(r *http.Request) (int, any, *apiError) {
	status, aerr := setAsActive(r)
	if aerr != nil {
		return 0, nil, aerr
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return 0, nil, errorf(http.StatusInternalServerError, "InternalFailureException", "generate key: %v", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return 0, nil, errorf(http.StatusInternalServerError, "InternalFailureException", "encode key: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, aerr := f.issueLocked(&key.PublicKey, pkix.Name{CommonName: AWSIssuedSubject}, status)
	if aerr != nil {
		return 0, nil, aerr
	}
	return http.StatusOK, map[string]any{
		"certificateArn": arn("cert/" + c.id), "certificateId": c.id, "certificatePem": c.pem,
		"keyPair": map[string]string{
			"PublicKey":  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})),
			"PrivateKey": string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})),
		},
	}, nil
}

// maxCSRLength is AWS's limit on certificateSigningRequest.
const maxCSRLength = 4096

// parseCSR checks a CSR as CreateCertificateFromCsr does: PEM, a valid
// self-signature, and a key AWS IoT accepts (RSA of 2048 bits or more, or
// ECDSA P-256/P-384/P-521).
func parseCSR(text string) (*x509.CertificateRequest, *apiError) {
	if text == "" || len(text) > maxCSRLength {
		return nil, invalid("certificateSigningRequest is required and must have length between 1 and %d", maxCSRLength)
	}
	block, _ := pem.Decode([]byte(text))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, invalid("The certificate signing request is not valid: no PEM CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, invalid("The certificate signing request is not valid: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, invalid("The certificate signing request's signature does not verify: %v", err)
	}
	switch k := csr.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, invalid("The certificate signing request has an RSA key of %d bits: use at least 2048", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
	default:
		return nil, invalid("The certificate signing request's key type %T is not supported: use RSA or ECDSA", k)
	}
	return csr, nil
}

// createCertificateFromCsr answers CreateCertificateFromCsr: a certificate
// for the CSR's key with the CSR's subject, signed by the fake's CA. Every
// call makes a new certificate, as AWS does.
func (f *Fake) createCertificateFromCsr(r *http.Request) (int, any, *apiError) {
	status, aerr := setAsActive(r)
	if aerr != nil {
		return 0, nil, aerr
	}
	var in struct {
		CertificateSigningRequest string `json:"certificateSigningRequest"`
	}
	if err := decodeBody(r, &in); err != nil {
		return 0, nil, err
	}
	csr, aerr := parseCSR(in.CertificateSigningRequest)
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, aerr := f.issueLocked(csr.PublicKey, csr.Subject, status)
	if aerr != nil {
		return 0, nil, aerr
	}
	return http.StatusOK, map[string]any{"certificateArn": arn("cert/" + c.id), "certificateId": c.id, "certificatePem": c.pem}, nil
}
