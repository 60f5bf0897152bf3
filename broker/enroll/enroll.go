// Package enroll gives a core device its identity without its private key
// ever leaving the device. An operator makes a one-time enrollment token for
// a core (POST /cores/{name}/enrollmentTokens); the agent sends the token and
// a CSR (POST /enroll) and gets back a certificate for the CSR's key, issued
// by the CA the core's provisioning used (in aws mode: by AWS IoT, with
// CreateCertificateFromCsr) and attached to the core's thing with the
// thing's policies, plus everything it needs to install the nucleus and
// connect. Tokens are stored hashed and spent exactly once.
package enroll

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// Token lifetimes (DESIGN.md: POST /cores/{name}/enrollmentTokens).
const (
	DefaultTokenLifetime = 24 * time.Hour
	MinTokenLifetime     = time.Minute
	MaxTokenLifetime     = 30 * 24 * time.Hour
)

// TokenPrefix starts every enrollment token, so it cannot be mistaken for an
// API token ("ggf_").
const TokenPrefix = "gge_"

// DefaultCertDays is the lifetime of an enrolled certificate when Config.CertDays is 0.
const DefaultCertDays = 365

// claimLease is how long an enrollment in progress holds its token. A
// broker that crashes mid-enrollment leaves a claim that expires after this,
// so the token is not burned uselessly.
const claimLease = 5 * time.Minute

// TokenRecord is an enrollment token as stored: only its hash.
type TokenRecord struct {
	Hash      string // hex SHA-256 of the token text
	CoreName  string
	ExpiresAt time.Time
	ClaimedAt time.Time // set while an enrollment using it is in progress
	UsedAt    time.Time // set once an enrollment using it succeeded
	CreatedAt time.Time
}

// Store persists enrollment tokens (broker/sqlstore implements it).
type Store interface {
	// InsertEnrollmentToken stores a new token record.
	InsertEnrollmentToken(ctx context.Context, rec TokenRecord) error
	// EnrollmentToken returns the record with this hash, or errkind.NotFound.
	EnrollmentToken(ctx context.Context, hash string) (TokenRecord, error)
	// ClaimEnrollmentToken atomically claims an unused, unexpired token whose
	// claim (if any) is older than staleBefore, setting claimed_at = at. It
	// reports whether this call won the claim.
	ClaimEnrollmentToken(ctx context.Context, hash string, at, staleBefore time.Time) (bool, error)
	// SpendEnrollmentToken marks the token claimed at claimedAt as used. It
	// reports false when that claim is no longer held.
	SpendEnrollmentToken(ctx context.Context, hash string, claimedAt, at time.Time) (bool, error)
	// ReleaseEnrollmentToken drops the claim made at claimedAt of an unused token.
	ReleaseEnrollmentToken(ctx context.Context, hash string, claimedAt time.Time) error
}

// CoreLookup tells whether a core exists and which CA made its identity.
type CoreLookup interface {
	// CoreCA returns the id of the CA the core's provisioning used, "" when
	// none is known (the default CA is then used), or errkind.NotFound when
	// no core of that name exists.
	CoreCA(ctx context.Context, name string) (caID string, err error)
}

// Issuer certifies public keys (the broker's CA service satisfies it).
type Issuer interface {
	// Issue makes a certificate for pub with the given subject, valid for
	// days days, signed by the CA caID ("" = the default CA). It returns the
	// certificate's PEM and the issuing CA certificate's PEM.
	Issue(ctx context.Context, caID string, pub crypto.PublicKey, subject pkix.Name, days int) (certPEM, caPEM string, err error)
}

// CSRSigner is an optional provider extension (the aws provider has it):
// when the provider has it, the cloud certifies the CSR's key
// (CreateCertificateFromCsr) instead of the broker's CA, and keeps the CSR's
// subject, so the CSR's common name must be the core's name (the agent
// policy is written against ${iot:Certificate.Subject.CommonName}).
type CSRSigner interface {
	// CreateCertificateFromCsr returns the id and PEM of an ACTIVE
	// certificate for the CSR's key.
	CreateCertificateFromCsr(ctx context.Context, csrPEM string) (certID, certPEM string, err error)
}

// CertificateDeleter is an optional provider extension: an enrollment that
// fails after the cloud made its certificate deletes that certificate.
type CertificateDeleter interface {
	DeleteCertificate(ctx context.Context, certID string) error
}

// Registrar records that a core has obtained its identity (the local
// provider satisfies it; nil in aws mode, where GetCoreDevice decides).
type Registrar interface {
	MarkCoreRegistered(ctx context.Context, name string) error
}

// Config configures a Service.
type Config struct {
	Store     Store
	Cores     CoreLookup
	Issuer    Issuer
	Provider  provider.Provider
	Registrar Registrar // may be nil
	// ServerCAPEM returns the PEM of the CA that verifies the broker's TLS
	// certificates (HTTPS and MQTT).
	ServerCAPEM func(ctx context.Context) (string, error)
	// Config returns the Greengrass installer config YAML for a core.
	Config       func(ctx context.Context, coreName string) (string, error)
	MQTTEndpoint string // host:port agents connect to
	BrokerURL    string // how agents reach this broker's API
	Mode         string // "local" or "aws"; default Provider.Mode()
	CertDays     int    // default DefaultCertDays
	Logger       *slog.Logger
	Now          func() time.Time // default time.Now
}

// Service makes enrollment tokens and enrolls cores.
type Service struct {
	cfg Config
	log *slog.Logger
	now func() time.Time
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CertDays <= 0 {
		cfg.CertDays = DefaultCertDays
	}
	if cfg.Mode == "" && cfg.Provider != nil {
		cfg.Mode = cfg.Provider.Mode()
	}
	return &Service{cfg: cfg, log: cfg.Logger, now: cfg.Now}
}

// Token is a newly made enrollment token; its text is shown only once.
type Token struct {
	Token     string
	CoreName  string
	ExpiresAt time.Time
}

// Request is the body of POST /enroll. The private key stays on the device:
// only a CSR is sent.
type Request struct {
	CoreName string `json:"coreName"`
	Token    string `json:"token"`
	CsrPem   string `json:"csrPem"`
}

// Response is the answer of POST /enroll (DESIGN.md, exact shape).
type Response struct {
	ThingName string `json:"thingName"`
	// CertificatePem is the device certificate for the CSR's key.
	CertificatePem string `json:"certificatePem"`
	// CaCertificatePem is the CA that issued CertificatePem.
	CaCertificatePem string `json:"caCertificatePem"`
	// ServerCaCertificatePem verifies the broker's TLS certificates.
	ServerCaCertificatePem string `json:"serverCaCertificatePem"`
	// InstallerConfig is the Greengrass installer config YAML text.
	InstallerConfig string `json:"installerConfig"`
	MQTTEndpoint    string `json:"mqttEndpoint"` // host:port
	BrokerURL       string `json:"brokerUrl"`
	Mode            string `json:"mode"` // local | aws
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

// CheckCoreName validates a core name (DESIGN.md: Names).
func CheckCoreName(name string) error {
	if !nameRE.MatchString(name) {
		return errkind.New(errkind.Invalid, "coreName %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and - (no ':' and no non-ASCII characters)", name)
	}
	return nil
}

// CreateToken makes a one-time enrollment token for an existing core, valid
// for expiresIn (0 means DefaultTokenLifetime). The token text is returned
// only here; the store keeps its hash.
func (s *Service) CreateToken(ctx context.Context, core string, expiresIn time.Duration) (Token, error) {
	if err := CheckCoreName(core); err != nil {
		return Token{}, err
	}
	if expiresIn == 0 {
		expiresIn = DefaultTokenLifetime
	}
	if expiresIn < MinTokenLifetime || expiresIn > MaxTokenLifetime {
		return Token{}, errkind.New(errkind.Invalid, "expiresInSeconds must be from %d to %d (30 days), got %d",
			int64(MinTokenLifetime/time.Second), int64(MaxTokenLifetime/time.Second), int64(expiresIn/time.Second))
	}
	if _, err := s.cfg.Cores.CoreCA(ctx, core); err != nil {
		if errkind.Is(err, errkind.NotFound) {
			return Token{}, errkind.New(errkind.NotFound, "core %q does not exist: create it with POST /coreTasks first", core)
		}
		return Token{}, fmt.Errorf("look up core %q: %w", core, err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return Token{}, fmt.Errorf("generate enrollment token: %w", err)
	}
	text := TokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	now := s.now().UTC().Truncate(time.Millisecond)
	rec := TokenRecord{Hash: hashToken(text), CoreName: core, ExpiresAt: now.Add(expiresIn), CreatedAt: now}
	if err := s.cfg.Store.InsertEnrollmentToken(ctx, rec); err != nil {
		return Token{}, fmt.Errorf("store enrollment token for core %q: %w", core, err)
	}
	s.log.Info("created enrollment token", "core", core, "expires_at", rec.ExpiresAt)
	return Token{Token: text, CoreName: core, ExpiresAt: rec.ExpiresAt}, nil
}

// Enroll checks the one-time token, certifies the CSR's public key for the
// core (CN = core name), attaches the certificate to the core's thing with
// the thing's policies, marks the core registered and returns what the agent
// needs. The token is spent only when all of that succeeded; a failed
// enrollment leaves it usable, and a crashed one frees it after a few minutes.
func (s *Service) Enroll(ctx context.Context, req Request) (Response, error) {
	if err := CheckCoreName(req.CoreName); err != nil {
		return Response{}, err
	}
	if strings.TrimSpace(req.Token) == "" {
		return Response{}, errkind.New(errkind.Invalid, "token is required: make one with POST /cores/%s/enrollmentTokens", req.CoreName)
	}
	if strings.TrimSpace(req.CsrPem) == "" {
		return Response{}, errkind.New(errkind.Invalid, "csrPem is required: send a PEM certificate signing request made with the device's key")
	}
	csr, err := certs.ParseCSR(req.CsrPem)
	if err != nil {
		return Response{}, errkind.Wrap(errkind.Invalid, err, "csrPem is not a valid certificate signing request")
	}
	if _, cloud := s.cfg.Provider.(CSRSigner); cloud && csr.Subject.CommonName != req.CoreName {
		return Response{}, errkind.New(errkind.Invalid, "csrPem has subject common name %q: in %s mode AWS IoT keeps the CSR's subject, so it must be the core name %q (the agent policy allows ${iot:Certificate.Subject.CommonName} only)", csr.Subject.CommonName, s.cfg.Mode, req.CoreName)
	}

	hash := hashToken(req.Token)
	rec, err := s.cfg.Store.EnrollmentToken(ctx, hash)
	if errkind.Is(err, errkind.NotFound) {
		return Response{}, errkind.New(errkind.Unauthorized, "enrollment token is not valid: make a new one with POST /cores/%s/enrollmentTokens", req.CoreName)
	}
	if err != nil {
		return Response{}, fmt.Errorf("look up enrollment token: %w", err)
	}
	now := s.now().UTC()
	if err := s.usable(rec, req.CoreName, now); err != nil {
		return Response{}, err
	}

	caID, err := s.cfg.Cores.CoreCA(ctx, req.CoreName)
	if errkind.Is(err, errkind.NotFound) {
		return Response{}, errkind.New(errkind.NotFound, "core %q does not exist (it was deleted after the token was made): create it with POST /coreTasks first", req.CoreName)
	}
	if err != nil {
		return Response{}, fmt.Errorf("look up core %q: %w", req.CoreName, err)
	}

	claimedAt := now.Truncate(time.Millisecond)
	won, err := s.cfg.Store.ClaimEnrollmentToken(ctx, hash, claimedAt, claimedAt.Add(-claimLease))
	if err != nil {
		return Response{}, fmt.Errorf("claim enrollment token: %w", err)
	}
	if !won {
		// Another enrollment got there first; say why from its current state.
		if rec, err := s.cfg.Store.EnrollmentToken(ctx, hash); err == nil {
			if err := s.usable(rec, req.CoreName, now); err != nil {
				return Response{}, err
			}
		}
		return Response{}, errkind.New(errkind.Unauthorized, "enrollment token is being used by another enrollment in progress; retry in a few minutes")
	}

	resp, err := s.enroll(ctx, req.CoreName, caID, req.CsrPem, csr.PublicKey)
	if err == nil {
		var spent bool
		spent, err = s.cfg.Store.SpendEnrollmentToken(ctx, hash, claimedAt, s.now().UTC())
		if err == nil && !spent {
			err = errkind.New(errkind.Unauthorized, "enrollment took longer than %v and its token was claimed by another enrollment; retry", claimLease)
		}
		if err != nil {
			return Response{}, fmt.Errorf("spend enrollment token of core %q: %w", req.CoreName, err)
		}
		s.log.Info("core enrolled", "core", req.CoreName)
		return resp, nil
	}
	// Leave the token usable for a retry once the cause is fixed.
	if rerr := s.cfg.Store.ReleaseEnrollmentToken(context.WithoutCancel(ctx), hash, claimedAt); rerr != nil {
		s.log.Warn("could not release enrollment token claim; it frees itself after the lease", "core", req.CoreName, "lease", claimLease, "err", rerr)
	}
	return Response{}, err
}

// usable says why a token cannot be used by core at now, or nil.
func (s *Service) usable(rec TokenRecord, core string, now time.Time) error {
	switch {
	case rec.CoreName != core:
		return errkind.New(errkind.Unauthorized, "enrollment token is not valid for core %q: use a token made for this core", core)
	case !rec.UsedAt.IsZero():
		return errkind.New(errkind.Unauthorized, "enrollment token has already been used: make a new one with POST /cores/%s/enrollmentTokens", core)
	case !now.Before(rec.ExpiresAt):
		return errkind.New(errkind.Unauthorized, "enrollment token has expired: make a new one with POST /cores/%s/enrollmentTokens", core)
	case !rec.ClaimedAt.IsZero() && now.Sub(rec.ClaimedAt) < claimLease:
		return errkind.New(errkind.Unauthorized, "enrollment token is being used by another enrollment in progress; retry in a few minutes")
	}
	return nil
}

// enroll does the side effects of an enrollment whose token is claimed:
// certify the key (the broker's CA, or the cloud through CSRSigner), attach
// the certificate to the core's thing with the thing's policies. A
// certificate the cloud made for an enrollment that then fails is deleted.
func (s *Service) enroll(ctx context.Context, core, caID, csrPEM string, pub crypto.PublicKey) (resp Response, err error) {
	p := s.cfg.Provider
	thing, err := p.DescribeThing(ctx, core)
	if errkind.Is(err, errkind.NotFound) {
		return Response{}, errkind.New(errkind.Invalid, "core %q has no thing in the registry (its provisioning template made none): use a template that creates the thing (AWS::IoT::Thing), or create the thing, then enroll again", core)
	}
	if err != nil {
		return Response{}, fmt.Errorf("describe thing %q: %w", core, err)
	}
	installerConfig, err := s.cfg.Config(ctx, core)
	if err != nil {
		return Response{}, fmt.Errorf("installer config of core %q: %w", core, err)
	}
	serverCA, err := s.cfg.ServerCAPEM(ctx)
	if err != nil {
		return Response{}, fmt.Errorf("server CA certificate: %w", err)
	}
	var certPEM, caPEM, certID string
	if signer, ok := p.(CSRSigner); ok {
		certID, certPEM, err = signer.CreateCertificateFromCsr(ctx, csrPEM)
		if err != nil {
			return Response{}, fmt.Errorf("create certificate from the CSR of core %q: %w", core, err)
		}
		defer func() {
			if err != nil {
				s.deleteCertificate(context.WithoutCancel(ctx), core, certID)
			}
		}()
		// AWS does not publish the CA that signs these certificates: the
		// certificate itself is the trust anchor the agent checks it against.
		caPEM = certPEM
	} else {
		certPEM, caPEM, err = s.cfg.Issuer.Issue(ctx, caID, pub, pkix.Name{CommonName: core}, s.cfg.CertDays)
		if err != nil {
			return Response{}, fmt.Errorf("issue certificate for core %q: %w", core, err)
		}
		certID, err = p.RegisterCertificate(ctx, certPEM, caPEM, "ACTIVE")
		if err != nil {
			return Response{}, fmt.Errorf("register certificate of core %q: %w", core, err)
		}
	}
	if err := p.AttachThingPrincipal(ctx, core, certID); err != nil {
		return Response{}, fmt.Errorf("attach certificate %s to thing %q: %w", certID, core, err)
	}
	for _, policy := range thing.Policies {
		if err := p.AttachPolicy(ctx, policy, certID); err != nil {
			return Response{}, fmt.Errorf("attach policy %q to certificate %s of core %q: %w", policy, certID, core, err)
		}
	}
	if s.cfg.Registrar != nil {
		if err := s.cfg.Registrar.MarkCoreRegistered(ctx, core); err != nil {
			return Response{}, fmt.Errorf("mark core %q registered: %w", core, err)
		}
	}
	s.log.Info("issued enrollment certificate", "core", core, "certificate_id", certID, "ca_id", caID)
	return Response{
		ThingName:              core,
		CertificatePem:         certPEM,
		CaCertificatePem:       caPEM,
		ServerCaCertificatePem: serverCA,
		InstallerConfig:        installerConfig,
		MQTTEndpoint:           s.cfg.MQTTEndpoint,
		BrokerURL:              s.cfg.BrokerURL,
		Mode:                   s.cfg.Mode,
	}, nil
}

// deleteCertificate removes a certificate the cloud made for a failed
// enrollment, when the provider can delete certificates. A failure is
// logged: the token stays usable and a retry makes a new certificate.
func (s *Service) deleteCertificate(ctx context.Context, core, certID string) {
	d, ok := s.cfg.Provider.(CertificateDeleter)
	if !ok {
		return
	}
	if err := d.DeleteCertificate(ctx, certID); err != nil {
		s.log.Warn("failed enrollment: could not delete its certificate", "core", core, "certificate_id", certID, "err", err)
	}
}

// hashToken is the stored form of an enrollment token: hex SHA-256.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
