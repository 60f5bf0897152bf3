package aws

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed" // AmazonRootCA1PEM
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/shared/certs"
)

// AmazonRootCA1PEM is Amazon Root CA 1, which AWS IoT Core's ATS data
// endpoints chain to: the broker verifies IoT Core with it and gives it to
// agents at enrollment, unless --aws-iot-ca-file names another.
//
//go:embed AmazonRootCA1.pem
var AmazonRootCA1PEM string

// BrokerCommonName is the subject CN of the broker's IoT Core certificate.
// The '.' cannot occur in a thing name, so the agent policy (which keys on
// the CN) never grants anything to it.
const BrokerCommonName = "ggfleet.broker"

// brokerIdentitySetting is the broker setting that keeps the identity.
const brokerIdentitySetting = "aws.brokerIdentity"

// BrokerIdentityRenewBefore is how long before its expiry the broker's
// certificate is replaced by a new one (by the next BrokerIdentity call).
const BrokerIdentityRenewBefore = 30 * 24 * time.Hour

// IdentityStore keeps the broker's identity in the database and
// serialises its creation across replicas (sqlstore.DB implements it).
type IdentityStore interface {
	WithLock(ctx context.Context, name string, fn func(ctx context.Context) error) error
	Setting(ctx context.Context, name string) (string, bool, error)
	PutSetting(ctx context.Context, name, value string) error
}

// CertificateIssuer signs the broker's certificate (ca.Authority does,
// with its default CA).
type CertificateIssuer interface {
	Issue(ctx context.Context, caID string, pub crypto.PublicKey, subject pkix.Name, days int) (certPEM, caPEM string, err error)
}

// IdentityConfig is what BrokerIdentity needs.
type IdentityConfig struct {
	Store  IdentityStore
	Issuer CertificateIssuer
	// SecretsKey (32 bytes, AES-256) encrypts the private key at rest, as
	// it does the CA keys.
	SecretsKey []byte
	// Days is the certificate's validity (0: 365 days).
	Days int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// storedIdentity is the setting's JSON: the key is AES-256-GCM sealed.
type storedIdentity struct {
	CertificatePem string `json:"certificatePem"`
	CAPem          string `json:"caPem"`
	EncryptedKey   string `json:"encryptedKey"` // base64 of version byte, nonce, ciphertext
}

// BrokerIdentity returns the broker's client certificate for AWS IoT Core:
// a key the broker made, a certificate for it from cfg.Issuer registered
// ACTIVE in AWS IoT, with the policy BrokerPolicyName attached. The first
// replica makes it under a database lock and stores it (key encrypted);
// every replica and every restart reuses it. A stored certificate that
// AWS no longer has is registered again; one that was deactivated or is
// about to expire is replaced by a new one.
func (p *Provider) BrokerIdentity(ctx context.Context, cfg IdentityConfig) (tls.Certificate, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var out tls.Certificate
	err := cfg.Store.WithLock(ctx, "aws-broker-identity", func(ctx context.Context) error {
		id, err := p.currentIdentity(ctx, cfg)
		if err != nil {
			return err
		}
		if id == nil {
			if id, err = p.newIdentity(ctx, cfg); err != nil {
				return err
			}
		}
		if _, err := p.PutPolicy(ctx, BrokerPolicyName, BrokerPolicyDocument); err != nil {
			return fmt.Errorf("create the broker policy %q: %w", BrokerPolicyName, err)
		}
		if err := p.AttachPolicy(ctx, BrokerPolicyName, certs.ID(id.Leaf)); err != nil {
			return fmt.Errorf("attach the broker policy %q: %w", BrokerPolicyName, err)
		}
		out = *id
		return nil
	})
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("the broker's AWS IoT identity: %w", err)
	}
	return out, nil
}

// currentIdentity returns the stored identity if it is still usable
// (registering it again if AWS lost it), or nil when a new one is needed.
func (p *Provider) currentIdentity(ctx context.Context, cfg IdentityConfig) (*tls.Certificate, error) {
	raw, ok, err := cfg.Store.Setting(ctx, brokerIdentitySetting)
	if err != nil || !ok {
		return nil, err
	}
	var st storedIdentity
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, fmt.Errorf("the stored identity is not valid JSON: %w", err)
	}
	id, err := decodeIdentity(st, cfg.SecretsKey)
	if err != nil {
		return nil, err
	}
	if cfg.Now().Add(BrokerIdentityRenewBefore).After(id.Leaf.NotAfter) {
		p.log.Info("the broker's AWS IoT certificate expires soon; making a new one", "certificateId", certs.ID(id.Leaf), "notAfter", id.Leaf.NotAfter)
		return nil, nil
	}
	certID := certs.ID(id.Leaf)
	c, err := p.DescribeCertificate(ctx, certID)
	switch {
	case errkind.Is(err, errkind.NotFound):
		p.log.Warn("the broker's AWS IoT certificate is no longer registered; registering it again", "certificateId", certID)
		if _, err := p.RegisterCertificate(ctx, st.CertificatePem, st.CAPem, "ACTIVE"); err != nil {
			return nil, fmt.Errorf("register the broker certificate again: %w", err)
		}
	case err != nil:
		return nil, err
	case c.Status != "ACTIVE":
		p.log.Warn("the broker's AWS IoT certificate is not ACTIVE (deactivated or revoked in AWS); making a new one", "certificateId", certID, "status", c.Status)
		return nil, nil
	}
	return id, nil
}

// newIdentity makes a key and certificate, registers the certificate and
// stores both.
func (p *Provider) newIdentity(ctx context.Context, cfg IdentityConfig) (*tls.Certificate, error) {
	key, err := certs.GenerateKey(certs.ECP256)
	if err != nil {
		return nil, err
	}
	certPEM, caPEM, err := cfg.Issuer.Issue(ctx, "", key.Public(), pkix.Name{CommonName: BrokerCommonName}, cfg.Days)
	if err != nil {
		return nil, fmt.Errorf("issue the broker certificate: %w", err)
	}
	certID, err := p.RegisterCertificate(ctx, certPEM, caPEM, "ACTIVE")
	if err != nil {
		return nil, fmt.Errorf("register the broker certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode the broker key: %w", err)
	}
	sealed, err := sealKey(cfg.SecretsKey, keyDER)
	if err != nil {
		return nil, err
	}
	st := storedIdentity{CertificatePem: certPEM, CAPem: caPEM, EncryptedKey: base64.StdEncoding.EncodeToString(sealed)}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if err := cfg.Store.PutSetting(ctx, brokerIdentitySetting, string(b)); err != nil {
		return nil, fmt.Errorf("store the broker identity: %w", err)
	}
	p.log.Info("made the broker's AWS IoT certificate", "certificateId", certID, "commonName", BrokerCommonName)
	return decodeIdentity(st, cfg.SecretsKey)
}

// decodeIdentity decrypts the key and pairs it with the certificate.
func decodeIdentity(st storedIdentity, secretsKey []byte) (*tls.Certificate, error) {
	sealed, err := base64.StdEncoding.DecodeString(st.EncryptedKey)
	if err != nil {
		return nil, fmt.Errorf("the stored broker key is not base64: %w", err)
	}
	keyDER, err := openKey(secretsKey, sealed)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("the stored broker key: %w", err)
	}
	leaf, err := certs.ParseCertificate(st.CertificatePem)
	if err != nil {
		return nil, fmt.Errorf("the stored broker certificate: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("the stored broker key cannot sign")
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(signer.Public()) {
		return nil, errors.New("the stored broker certificate is not for the stored key")
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: signer, Leaf: leaf}, nil
}

// keySealFormat is the first byte of a sealed key (AES-256-GCM, 12-byte
// random nonce, the setting name as additional data), the scheme the CA
// keys use.
const keySealFormat = 1

func sealKey(secretsKey, plaintext []byte) ([]byte, error) {
	aead, err := newAEAD(secretsKey)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	out := append([]byte{keySealFormat}, nonce...)
	return aead.Seal(out, nonce, plaintext, []byte(brokerIdentitySetting)), nil
}

func openKey(secretsKey, sealed []byte) ([]byte, error) {
	aead, err := newAEAD(secretsKey)
	if err != nil {
		return nil, err
	}
	if len(sealed) < 1+aead.NonceSize() || sealed[0] != keySealFormat {
		return nil, errors.New("the stored broker key is not in a known format")
	}
	nonce, ct := sealed[1:1+aead.NonceSize()], sealed[1+aead.NonceSize():]
	pt, err := aead.Open(nil, nonce, ct, []byte(brokerIdentitySetting))
	if err != nil {
		return nil, errors.New("decrypt the stored broker key: the secrets key does not match the one it was stored with (every replica needs the same --secrets-key-file)")
	}
	return pt, nil
}

func newAEAD(secretsKey []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(secretsKey)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	return cipher.NewGCM(block)
}
