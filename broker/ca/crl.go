package ca

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ggfleet/ggfleet/shared/certs"
)

// How long a written CRL is valid, and how often an unchanged one is signed
// again. An external MQTT broker refuses every client once its CRL has
// expired, so the margin is wide: the broker may be down for weeks.
const (
	crlValidity = 30 * 24 * time.Hour
	crlResign   = 24 * time.Hour
)

// Revoked is a device certificate that may no longer connect (its core was
// deleted), kept after the certificate itself is gone so that the CRL an
// external MQTT broker checks can name it.
type Revoked struct {
	CertID         string // certs.ID of the certificate
	CAID           string // the issuing CA's id ("" = unknown; found by signature)
	CertificatePem string
	RevokedAt      time.Time
}

// RevocationStore keeps revoked certificates (broker/sqlstore implements it).
type RevocationStore interface {
	// AddRevoked records r; recording the same CertID again is a no-op.
	AddRevoked(ctx context.Context, r Revoked) error
	// ListRevoked returns every revoked certificate, oldest first.
	ListRevoked(ctx context.Context) ([]Revoked, error)
}

// CRLs returns one PEM X.509 CRL per CA, each listing the revoked
// certificates that CA issued and that have not expired yet. Every CA gets
// one, even if empty: a TLS server checking CRLs (Mosquitto's crlfile)
// refuses a certificate whose issuer has none. A CA whose key usage does
// not allow signing CRLs (an imported one) is skipped with an error log.
func (a *Authority) CRLs(ctx context.Context, revoked []Revoked) ([]byte, error) {
	recs, err := a.store.ListCAs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list certificate authorities: %w", err)
	}
	now := a.now()
	parsed := make([]*x509.Certificate, 0, len(revoked))
	for _, r := range revoked {
		c, err := certs.ParseCertificate(r.CertificatePem)
		if err != nil {
			a.log.Warn("a revoked certificate does not parse; left out of the CRL", "certId", r.CertID, "error", err)
			parsed = append(parsed, nil)
			continue
		}
		parsed = append(parsed, c)
	}
	var out bytes.Buffer
	for _, rec := range recs {
		caCert, signer, err := a.issuer(rec)
		if err != nil {
			a.log.Error("no CRL for a certificate authority", "caId", rec.ID, "error", err)
			continue
		}
		if caCert.KeyUsage != 0 && caCert.KeyUsage&x509.KeyUsageCRLSign == 0 {
			a.log.Error("no CRL for a certificate authority: its key usage lacks cRLSign", "caId", rec.ID, "subject", rec.Subject)
			continue
		}
		var entries []x509.RevocationListEntry
		for i, r := range revoked {
			c := parsed[i]
			if c == nil || now.After(c.NotAfter) {
				continue
			}
			if r.CAID != "" && r.CAID != rec.ID {
				continue
			}
			if c.CheckSignatureFrom(caCert) != nil {
				continue
			}
			entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: r.RevokedAt.UTC()})
		}
		tmpl := &x509.RevocationList{
			Number:                    big.NewInt(now.UnixMilli()),
			ThisUpdate:                now.Add(-5 * time.Minute),
			NextUpdate:                capAt(now.Add(crlValidity), caCert.NotAfter),
			RevokedCertificateEntries: entries,
		}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, caCert, signer)
		if err != nil {
			return nil, fmt.Errorf("sign the CRL of certificate authority %s: %w", rec.ID, err)
		}
		if err := pem.Encode(&out, &pem.Block{Type: "X509 CRL", Bytes: der}); err != nil {
			return nil, err
		}
	}
	return out.Bytes(), nil
}

// CABundle returns the PEM certificates of every CA: what an external MQTT
// broker verifies device certificates with (Mosquitto's cafile).
func (a *Authority) CABundle(ctx context.Context) ([]byte, error) {
	recs, err := a.store.ListCAs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list certificate authorities: %w", err)
	}
	var out bytes.Buffer
	for _, r := range recs {
		out.WriteString(r.CertificatePem)
		if !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
			out.WriteByte('\n')
		}
	}
	return out.Bytes(), nil
}

// CRLFileConfig configures a CRLFile.
type CRLFileConfig struct {
	Authority *Authority
	Store     RevocationStore
	// CRLPath receives the CRLs (PEM); CAPath, when set, the CA bundle.
	CRLPath string
	CAPath  string
	// Interval between checks for changes made elsewhere (another replica,
	// a new CA); default 10s.
	Interval time.Duration
	Logger   *slog.Logger
}

// CRLFile keeps a CRL file (and optionally a CA bundle) current for an
// external MQTT broker: it rewrites them when a certificate is revoked or a
// CA added, and signs the CRLs again daily so they never expire. Files are
// replaced atomically and are 0644 (certificates and CRLs are public; the
// MQTT broker may run as another user).
type CRLFile struct {
	cfg  CRLFileConfig
	log  *slog.Logger
	kick chan struct{}

	lastSum     string
	lastWritten time.Time
}

// NewCRLFile returns a CRLFile; Run writes and maintains the files.
func NewCRLFile(cfg CRLFileConfig) *CRLFile {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &CRLFile{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1)}
}

// Revoke records the certificates as revoked and has Run rewrite the file
// at once.
func (f *CRLFile) Revoke(ctx context.Context, rs []Revoked) error {
	for _, r := range rs {
		if err := f.cfg.Store.AddRevoked(ctx, r); err != nil {
			return fmt.Errorf("record revoked certificate %s: %w", r.CertID, err)
		}
		f.log.Info("certificate revoked", "certId", r.CertID, "caId", r.CAID)
	}
	select {
	case f.kick <- struct{}{}:
	default:
	}
	return nil
}

// Run writes the files now (an error here is returned: the operator named
// a path that cannot be written), then keeps them current until ctx ends.
func (f *CRLFile) Run(ctx context.Context) error {
	if err := f.Update(ctx); err != nil {
		return err
	}
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-f.kick:
		}
		if err := f.Update(ctx); err != nil && ctx.Err() == nil {
			f.log.Error("could not update the CRL file", "path", f.cfg.CRLPath, "error", err)
		}
	}
}

// Update rewrites the files if the revoked certificates or the CAs changed,
// or the CRLs are due to be signed again.
func (f *CRLFile) Update(ctx context.Context) error {
	revoked, err := f.cfg.Store.ListRevoked(ctx)
	if err != nil {
		return fmt.Errorf("list revoked certificates: %w", err)
	}
	bundle, err := f.cfg.Authority.CABundle(ctx)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(revoked))
	for _, r := range revoked {
		ids = append(ids, r.CertID)
	}
	slices.Sort(ids)
	h := sha256.New()
	h.Write(bundle)
	for _, id := range ids {
		h.Write([]byte(id))
	}
	sum := hex.EncodeToString(h.Sum(nil))
	now := f.cfg.Authority.now()
	if sum == f.lastSum && now.Sub(f.lastWritten) < crlResign {
		return nil
	}
	crls, err := f.cfg.Authority.CRLs(ctx, revoked)
	if err != nil {
		return err
	}
	if f.cfg.CAPath != "" {
		if err := writeAtomic(f.cfg.CAPath, bundle); err != nil {
			return err
		}
	}
	if f.cfg.CRLPath != "" {
		if err := writeAtomic(f.cfg.CRLPath, crls); err != nil {
			return err
		}
	}
	f.lastSum, f.lastWritten = sum, now
	f.log.Info("wrote the CRL file", "path", f.cfg.CRLPath, "revoked", len(revoked))
	return nil
}

// writeAtomic replaces path with data (0644) through a temporary file in
// the same directory, so a reader never sees a half-written file.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
