// Package ca is the broker's local certificate authority: it keeps the CAs
// that sign device certificates (a generated default one, and any an
// operator generates or imports), issues device and TLS server certificates,
// and gives the pool that verifies device client certificates.
//
// CA private keys are stored only encrypted (AES-256-GCM with the broker's
// secrets key), so several replicas can share them through the database
// without the database alone revealing them. Nothing here logs a key.
package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// Defaults for generated CAs and issued certificates.
const (
	DefaultCommonName = "ggfleet default CA"
	DefaultCADays     = 3650
	DefaultCertDays   = 365
	maxDays           = 36500
	serverCertDays    = 365
)

// CA is a certificate authority as the API shows it.
type CA struct {
	ID             string // hex SHA-256 of the certificate's DER (certs.ID)
	Subject        string // the certificate's subject, "CN=…"
	NotAfter       time.Time
	Default        bool   // signs certificates when no CA is named
	KeyAlgorithm   string // of the CA's own key: EC-P256, RSA-2048, …
	CertificatePem string
}

// Record is a CA as the Store keeps it: the CA plus its encrypted key.
type Record struct {
	CA
	EncryptedKey []byte // AES-256-GCM blob; never the plaintext key
	CreatedAt    time.Time
}

// Store persists CAs. Implementations must be safe for concurrent use and
// shared by every replica (broker/sqlstore implements it).
type Store interface {
	// InsertCA stores a new, non-default CA; errkind.Conflict if its id exists.
	InsertCA(ctx context.Context, rec Record) error
	// CreateDefaultCA stores rec as the default CA unless a default exists,
	// atomically (two replicas may race): it returns the default CA that is
	// stored afterwards and whether it is rec.
	CreateDefaultCA(ctx context.Context, rec Record) (Record, bool, error)
	// GetCA returns the CA with the id, or errkind.NotFound.
	GetCA(ctx context.Context, id string) (Record, error)
	// DefaultCA returns the default CA, or errkind.NotFound before Init.
	DefaultCA(ctx context.Context) (Record, error)
	// ListCAs returns every CA, the default first, then by subject and id.
	ListCAs(ctx context.Context) ([]Record, error)
}

// Config is what an Authority needs.
type Config struct {
	Store      Store
	SecretsKey []byte // 32 bytes, from LoadOrCreateSecretsKey
	Logger     *slog.Logger
	Now        func() time.Time // default time.Now
}

// Authority issues certificates from the stored CAs.
type Authority struct {
	store      Store
	secretsKey []byte
	log        *slog.Logger
	now        func() time.Time

	mu      sync.Mutex
	signers map[string]crypto.Signer     // decrypted CA keys by CA id
	servers map[string]*tls.Certificate  // server certificates by host set
	parsed  map[string]*x509.Certificate // CA certificates by CA id
	pool    *x509.CertPool               // Pool's answer, valid until poolAt+PoolTTL
	poolAt  time.Time
}

// PoolTTL is how long Pool reuses the CA list it read. Every MQTT handshake
// asks for it: a reconnect storm of hundreds of agents must not queue as
// many database reads in front of the broker's own work (on SQLite's single
// connection that starved the job queue at start-up). A CA created on this
// replica is seen at once; one created on another replica within PoolTTL.
const PoolTTL = 5 * time.Second

// New returns an Authority over the store.
func New(cfg Config) *Authority {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Authority{
		store:      cfg.Store,
		secretsKey: cfg.SecretsKey,
		log:        cfg.Logger,
		now:        cfg.Now,
		signers:    map[string]crypto.Signer{},
		servers:    map[string]*tls.Certificate{},
		parsed:     map[string]*x509.Certificate{},
	}
}

// Init makes sure a default CA exists and returns it; created reports
// whether this call made it. Replicas starting together agree on one CA:
// the store keeps the first and the others read it.
func (a *Authority) Init(ctx context.Context) (CA, bool, error) {
	rec, err := a.store.DefaultCA(ctx)
	if err == nil {
		_, err := a.signer(rec)
		return rec.CA, false, err
	}
	if !errkind.Is(err, errkind.NotFound) {
		return CA{}, false, fmt.Errorf("read the default certificate authority: %w", err)
	}
	rec, key, err := a.newCA(DefaultCommonName, DefaultCADays, certs.ECP256)
	if err != nil {
		return CA{}, false, err
	}
	rec.Default = true
	stored, created, err := a.store.CreateDefaultCA(ctx, rec)
	if err != nil {
		return CA{}, false, fmt.Errorf("store the default certificate authority: %w", err)
	}
	if created {
		a.remember(rec.ID, key)
		a.forgetPool()
		a.log.Info("created the default certificate authority", "caId", rec.ID, "subject", rec.Subject, "notAfter", rec.NotAfter)
		return stored.CA, true, nil
	}
	if _, err := a.signer(stored); err != nil {
		return CA{}, false, err
	}
	return stored.CA, false, nil
}

// List returns every CA, the default first.
func (a *Authority) List(ctx context.Context) ([]CA, error) {
	recs, err := a.store.ListCAs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list certificate authorities: %w", err)
	}
	out := make([]CA, len(recs))
	for i, r := range recs {
		out[i] = r.CA
	}
	return out, nil
}

// Get returns the CA with the id, or errkind.NotFound.
func (a *Authority) Get(ctx context.Context, id string) (CA, error) {
	rec, err := a.store.GetCA(ctx, id)
	if errkind.Is(err, errkind.NotFound) {
		return CA{}, errkind.Wrap(errkind.NotFound, err, "certificate authority %q does not exist", id)
	}
	if err != nil {
		return CA{}, fmt.Errorf("get certificate authority %q: %w", id, err)
	}
	return rec.CA, nil
}

// Default returns the default CA, or errkind.NotFound before Init.
func (a *Authority) Default(ctx context.Context) (CA, error) {
	rec, err := a.store.DefaultCA(ctx)
	if errkind.Is(err, errkind.NotFound) {
		return CA{}, errkind.Wrap(errkind.NotFound, err, "there is no default certificate authority yet")
	}
	if err != nil {
		return CA{}, fmt.Errorf("get the default certificate authority: %w", err)
	}
	return rec.CA, nil
}

// Import stores an existing CA certificate and its private key. The
// certificate must be a CA (basic constraints CA:TRUE), unexpired, and match
// the key; importing the same certificate twice is errkind.Conflict.
func (a *Authority) Import(ctx context.Context, certPEM, keyPEM string) (CA, error) {
	if strings.TrimSpace(certPEM) == "" {
		return CA{}, errkind.New(errkind.Invalid, "certificatePem is required: the PEM of the CA certificate")
	}
	if strings.TrimSpace(keyPEM) == "" {
		return CA{}, errkind.New(errkind.Invalid, "privateKeyPem is required: the PEM of the CA certificate's private key")
	}
	cert, err := certs.ParseCertificate(certPEM)
	if err != nil {
		return CA{}, errkind.Wrap(errkind.Invalid, err, "certificatePem is not a PEM certificate")
	}
	key, err := certs.ParseKey(keyPEM)
	if err != nil {
		return CA{}, errkind.Wrap(errkind.Invalid, err, "privateKeyPem is not a PEM private key (PKCS#8, SEC 1 or PKCS#1)")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return CA{}, errkind.New(errkind.Invalid, "the certificate %q is not a CA certificate: it needs the basic constraints extension with CA:TRUE", cert.Subject.String())
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return CA{}, errkind.New(errkind.Invalid, "the certificate %q may not sign certificates: its key usage lacks keyCertSign", cert.Subject.String())
	}
	if !publicKeyEqual(key.Public(), cert.PublicKey) {
		return CA{}, errkind.New(errkind.Invalid, "privateKeyPem does not belong to the certificate %q: send the private key of that certificate", cert.Subject.String())
	}
	if now := a.now(); now.After(cert.NotAfter) {
		return CA{}, errkind.New(errkind.Invalid, "the certificate %q expired on %s: import a valid CA certificate", cert.Subject.String(), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	alg := algorithmName(cert.PublicKey)
	if alg == "" {
		return CA{}, errkind.New(errkind.Invalid, "the certificate %q has an unsupported key type: use an EC (P-256, P-384, P-521), RSA or Ed25519 key", cert.Subject.String())
	}
	rec, err := a.record(cert, key)
	if err != nil {
		return CA{}, err
	}
	if err := a.store.InsertCA(ctx, rec); err != nil {
		if errkind.Is(err, errkind.Conflict) {
			return CA{}, errkind.Wrap(errkind.Conflict, err, "certificate authority %s (%s) is already imported", rec.ID, rec.Subject)
		}
		return CA{}, fmt.Errorf("store certificate authority %s: %w", rec.ID, err)
	}
	a.remember(rec.ID, key)
	a.forgetPool()
	a.log.Info("imported a certificate authority", "caId", rec.ID, "subject", rec.Subject, "notAfter", rec.NotAfter)
	return rec.CA, nil
}

// Generate makes and stores a new self-signed CA. keyAlg "" means EC-P256,
// days 0 means 3650.
func (a *Authority) Generate(ctx context.Context, commonName string, days int, keyAlg string) (CA, error) {
	commonName = strings.TrimSpace(commonName)
	if commonName == "" {
		return CA{}, errkind.New(errkind.Invalid, "commonName is required: the name of the new certificate authority")
	}
	if len(commonName) > 64 {
		return CA{}, errkind.New(errkind.Invalid, "commonName is %d characters long: use at most 64", len(commonName))
	}
	if days == 0 {
		days = DefaultCADays
	}
	if days < 0 || days > maxDays {
		return CA{}, errkind.New(errkind.Invalid, "daysExpiry must be from 1 to %d, got %d", maxDays, days)
	}
	if err := certs.CheckAlgorithm(keyAlg); err != nil {
		return CA{}, errkind.Wrap(errkind.Invalid, err, "keyAlgorithm %q is not supported: use %s or %s", keyAlg, certs.ECP256, certs.RSA2048)
	}
	rec, key, err := a.newCA(commonName, days, keyAlg)
	if err != nil {
		return CA{}, err
	}
	if err := a.store.InsertCA(ctx, rec); err != nil {
		return CA{}, fmt.Errorf("store certificate authority %s: %w", rec.ID, err)
	}
	a.remember(rec.ID, key)
	a.forgetPool()
	a.log.Info("generated a certificate authority", "caId", rec.ID, "subject", rec.Subject, "notAfter", rec.NotAfter)
	return rec.CA, nil
}

// Issue signs a client certificate for pub with the CA caID ("" = the
// default CA) and returns it with the CA certificate, both PEM. days 0 means
// 365; the certificate never outlives its CA.
func (a *Authority) Issue(ctx context.Context, caID string, pub crypto.PublicKey, subject pkix.Name, days int) (certPEM, caPEM string, err error) {
	if days == 0 {
		days = DefaultCertDays
	}
	if days < 0 || days > maxDays {
		return "", "", errkind.New(errkind.Invalid, "the certificate validity must be from 1 to %d days, got %d", maxDays, days)
	}
	if certs.Algorithm(pub) == "" {
		return "", "", errkind.New(errkind.Invalid, "the public key is not supported: use %s or %s", certs.ECP256, certs.RSA2048)
	}
	rec, err := a.lookup(ctx, caID)
	if err != nil {
		return "", "", err
	}
	caCert, signer, err := a.issuer(rec)
	if err != nil {
		return "", "", err
	}
	now := a.now()
	tmpl := &x509.Certificate{
		Subject:               subject,
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              capAt(now.AddDate(0, 0, days), caCert.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := a.sign(tmpl, caCert, pub, signer)
	if err != nil {
		return "", "", fmt.Errorf("issue certificate for %q: %w", subject.CommonName, err)
	}
	return certs.EncodeCertificate(der), rec.CertificatePem, nil
}

// DefaultKeyAlgorithm is the key algorithm of the CA caID ("" = default),
// which is the default for device keys it issues: EC-P256 or RSA-2048.
func (a *Authority) DefaultKeyAlgorithm(ctx context.Context, caID string) (string, error) {
	rec, err := a.lookup(ctx, caID)
	if err != nil {
		return "", err
	}
	switch {
	case rec.KeyAlgorithm == certs.ECP256 || rec.KeyAlgorithm == certs.RSA2048:
		return rec.KeyAlgorithm, nil
	case strings.HasPrefix(rec.KeyAlgorithm, "RSA-"):
		return certs.RSA2048, nil
	}
	return certs.ECP256, nil
}

// ServerCertificate returns a TLS server certificate from the default CA for
// hosts (DNS names or IP addresses), cached in memory per host set and
// renewed when a day or less of validity is left.
func (a *Authority) ServerCertificate(ctx context.Context, hosts []string) (tls.Certificate, error) {
	var clean []string
	for _, h := range hosts {
		if h = strings.TrimSpace(h); h != "" {
			clean = append(clean, h)
		}
	}
	if len(clean) == 0 {
		return tls.Certificate{}, errkind.New(errkind.Invalid, "a server certificate needs at least one host name or IP address")
	}
	slices.Sort(clean)
	clean = slices.Compact(clean)
	cacheKey := strings.Join(clean, ",")
	now := a.now()

	a.mu.Lock()
	cached := a.servers[cacheKey]
	a.mu.Unlock()
	if cached != nil && now.Before(cached.Leaf.NotAfter.Add(-24*time.Hour)) {
		return *cached, nil
	}

	rec, err := a.lookup(ctx, "")
	if err != nil {
		return tls.Certificate{}, err
	}
	caCert, signer, err := a.issuer(rec)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := certs.GenerateKey(certs.ECP256)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: clean[0]},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              capAt(now.AddDate(0, 0, serverCertDays), caCert.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range clean {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := a.sign(tmpl, caCert, key.Public(), signer)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue server certificate for %s: %w", cacheKey, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse server certificate: %w", err)
	}
	// The chain carries the CA too, so a client that pins the CA by its
	// SHA-256 (ggagent --ca-sha256) can verify the leaf without a trust store.
	tc := &tls.Certificate{Certificate: [][]byte{der, caCert.Raw}, PrivateKey: key, Leaf: leaf}
	a.mu.Lock()
	a.servers[cacheKey] = tc
	a.mu.Unlock()
	a.log.Info("issued a TLS server certificate", "hosts", cacheKey, "caId", rec.ID, "notAfter", leaf.NotAfter)
	return *tc, nil
}

// Pool returns every CA certificate, to verify device client certificates.
// The answer is reused for PoolTTL (and dropped when this replica adds a CA).
func (a *Authority) Pool(ctx context.Context) (*x509.CertPool, error) {
	now := a.now()
	a.mu.Lock()
	if a.pool != nil && now.Sub(a.poolAt) < PoolTTL && !now.Before(a.poolAt) {
		pool := a.pool
		a.mu.Unlock()
		return pool, nil
	}
	a.mu.Unlock()
	recs, err := a.store.ListCAs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list certificate authorities: %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range recs {
		c, err := a.certificate(r)
		if err != nil {
			return nil, err
		}
		pool.AddCert(c)
	}
	a.mu.Lock()
	a.pool, a.poolAt = pool, now
	a.mu.Unlock()
	return pool, nil
}

// forgetPool makes the next Pool read the CA list again.
func (a *Authority) forgetPool() {
	a.mu.Lock()
	a.pool = nil
	a.mu.Unlock()
}

// lookup returns the CA record for caID, "" meaning the default.
func (a *Authority) lookup(ctx context.Context, caID string) (Record, error) {
	memo := memoOf(ctx)
	if rec, ok := memo.get(caID); ok {
		return rec, nil
	}
	rec, err := a.read(ctx, caID)
	if err == nil {
		memo.put(caID, rec)
	}
	return rec, err
}

// read reads the record of CA caID ("" = the default).
func (a *Authority) read(ctx context.Context, caID string) (Record, error) {
	if caID == "" {
		rec, err := a.store.DefaultCA(ctx)
		if errkind.Is(err, errkind.NotFound) {
			return Record{}, errkind.Wrap(errkind.Unavailable, err, "there is no default certificate authority yet: the broker has not finished starting")
		}
		if err != nil {
			return Record{}, fmt.Errorf("get the default certificate authority: %w", err)
		}
		return rec, nil
	}
	rec, err := a.store.GetCA(ctx, caID)
	if errkind.Is(err, errkind.NotFound) {
		return Record{}, errkind.Wrap(errkind.Invalid, err, "certificate authority %q does not exist", caID)
	}
	if err != nil {
		return Record{}, fmt.Errorf("get certificate authority %q: %w", caID, err)
	}
	return rec, nil
}

// newCA generates a self-signed CA and its record (key encrypted).
func (a *Authority) newCA(commonName string, days int, keyAlg string) (Record, crypto.Signer, error) {
	key, err := certs.GenerateKey(keyAlg)
	if err != nil {
		return Record{}, nil, errkind.Wrap(errkind.Invalid, err, "generate the key of certificate authority %q", commonName)
	}
	now := a.now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.AddDate(0, 0, days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := a.sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return Record{}, nil, fmt.Errorf("create certificate authority %q: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Record{}, nil, fmt.Errorf("parse the new certificate authority: %w", err)
	}
	rec, err := a.record(cert, key)
	return rec, key, err
}

// record builds the stored form of a CA, encrypting its key.
func (a *Authority) record(cert *x509.Certificate, key crypto.Signer) (Record, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Record{}, fmt.Errorf("encode the certificate authority's key: %w", err)
	}
	id := certs.ID(cert)
	blob, err := seal(a.secretsKey, id, der)
	if err != nil {
		return Record{}, fmt.Errorf("encrypt the key of certificate authority %s: %w", id, err)
	}
	return Record{
		CA: CA{
			ID:             id,
			Subject:        cert.Subject.String(),
			NotAfter:       cert.NotAfter.UTC(),
			KeyAlgorithm:   algorithmName(cert.PublicKey),
			CertificatePem: certs.EncodeCertificate(cert.Raw),
		},
		EncryptedKey: blob,
		CreatedAt:    a.now().UTC(),
	}, nil
}

// sign creates a certificate with a random 128-bit serial number.
func (a *Authority) sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
}

// issuer returns the parsed certificate and the decrypted key of a CA.
func (a *Authority) issuer(rec Record) (*x509.Certificate, crypto.Signer, error) {
	cert, err := a.certificate(rec)
	if err != nil {
		return nil, nil, err
	}
	signer, err := a.signer(rec)
	if err != nil {
		return nil, nil, err
	}
	if a.now().After(cert.NotAfter) {
		return nil, nil, errkind.New(errkind.Invalid, "certificate authority %s (%s) expired on %s: generate or import another one", rec.ID, rec.Subject, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return cert, signer, nil
}

// certificate parses (and caches) a CA's certificate.
func (a *Authority) certificate(rec Record) (*x509.Certificate, error) {
	a.mu.Lock()
	c := a.parsed[rec.ID]
	a.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := certs.ParseCertificate(rec.CertificatePem)
	if err != nil {
		return nil, fmt.Errorf("certificate authority %s: stored certificate: %w", rec.ID, err)
	}
	a.mu.Lock()
	a.parsed[rec.ID] = c
	a.mu.Unlock()
	return c, nil
}

// signer decrypts (and caches) a CA's private key.
func (a *Authority) signer(rec Record) (crypto.Signer, error) {
	a.mu.Lock()
	s := a.signers[rec.ID]
	a.mu.Unlock()
	if s != nil {
		return s, nil
	}
	der, err := open(a.secretsKey, rec.ID, rec.EncryptedKey)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("certificate authority %s: stored key: %w", rec.ID, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("certificate authority " + rec.ID + ": stored key cannot sign")
	}
	a.remember(rec.ID, s)
	return s, nil
}

func (a *Authority) remember(id string, key crypto.Signer) {
	a.mu.Lock()
	a.signers[id] = key
	a.mu.Unlock()
}

// capAt returns t, or limit when t is later.
func capAt(t, limit time.Time) time.Time {
	if t.After(limit) {
		return limit
	}
	return t
}

// publicKeyEqual reports whether two public keys are the same key.
func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// algorithmName names a CA key's algorithm: EC-P256 and RSA-2048 as
// certInfo.keyAlgorithm spells them, and the same pattern for others.
func algorithmName(pub crypto.PublicKey) string {
	if alg := certs.Algorithm(pub); alg != "" {
		return alg
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "EC-" + strings.ReplaceAll(k.Curve.Params().Name, "-", "")
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return ""
}
