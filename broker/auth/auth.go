// Package auth checks the broker's API bearer tokens and the dashboard's
// sessions made from them. Tokens are 32 random
// bytes shown once as "ggf_<base64url>"; only their SHA-256 is stored, so a
// leaked database does not leak a usable token. On first start the broker
// creates an admin token and writes it to a 0600 file in its data dir; an
// operator who lost it runs RotateAdminToken (the CLI's admin-token
// rotation), which revokes the old token and writes a new file.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// TokenPrefix starts every API token, so tokens are recognisable in config
// files and secret scanners.
const TokenPrefix = "ggf_"

// AdminName is the name of the token created on first start.
const AdminName = "admin"

// touchInterval limits how often last_used_at is written, so that every
// request does not become a database write.
const touchInterval = time.Minute

// Record is an API token as stored: never the token, only its hash.
type Record struct {
	ID         string
	Name       string
	Hash       string // hex SHA-256 of the token text
	CreatedAt  time.Time
	LastUsedAt time.Time // zero until first used
	Revoked    bool
}

// Store persists token records (broker/sqlstore implements it).
type Store interface {
	// InsertAPIToken stores a new record; errkind.Conflict when an active
	// (unrevoked) token with the same name, or the same hash, exists.
	InsertAPIToken(ctx context.Context, rec Record) error
	// ReplaceAPIToken revokes every active token named rec.Name and inserts
	// rec, in one transaction.
	ReplaceAPIToken(ctx context.Context, rec Record) error
	// APITokenByHash returns the record with this hash, or errkind.NotFound.
	APITokenByHash(ctx context.Context, hash string) (Record, error)
	// APITokenNameExists reports whether any record (revoked or not) has the name.
	APITokenNameExists(ctx context.Context, name string) (bool, error)
	// DeleteAPIToken removes a record; a missing one is not an error.
	DeleteAPIToken(ctx context.Context, id string) error
	// TouchAPIToken sets a record's last_used_at.
	TouchAPIToken(ctx context.Context, id string, at time.Time) error
}

// Config configures a Service.
type Config struct {
	Store  Store
	Logger *slog.Logger
	Now    func() time.Time // default time.Now
	// Sessions stores dashboard sessions; nil: Login is unavailable.
	Sessions SessionStore
	// SessionTTL is how long a dashboard session lasts (default DefaultSessionTTL).
	SessionTTL time.Duration
}

// Service authenticates API requests and manages API tokens.
type Service struct {
	store      Store
	sessions   SessionStore
	sessionTTL time.Duration
	log        *slog.Logger
	now        func() time.Time
}

// New returns a Service.
func New(cfg Config) *Service {
	s := &Service{store: cfg.Store, sessions: cfg.Sessions, sessionTTL: cfg.SessionTTL, log: cfg.Logger, now: cfg.Now}
	if s.sessionTTL <= 0 {
		s.sessionTTL = DefaultSessionTTL
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Authenticate returns nil when token is a valid, unrevoked API token, and
// an errkind.Unauthorized error otherwise. It satisfies httpapi.Authenticator.
func (s *Service) Authenticate(ctx context.Context, token string) error {
	if !wellFormed(token) {
		return errkind.New(errkind.Unauthorized, "invalid token")
	}
	hash := Hash(token)
	rec, err := s.store.APITokenByHash(ctx, hash)
	if errkind.Is(err, errkind.NotFound) {
		return errkind.New(errkind.Unauthorized, "invalid token")
	}
	if err != nil {
		return fmt.Errorf("look up API token: %w", err)
	}
	// The lookup already matched the hash; compare again in constant time so
	// that a store with a case-insensitive or prefix match cannot let a wrong
	// token through.
	if subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(hash)) != 1 {
		return errkind.New(errkind.Unauthorized, "invalid token")
	}
	if rec.Revoked {
		return errkind.New(errkind.Unauthorized, "token %q has been revoked", rec.Name)
	}
	now := s.now()
	if now.Sub(rec.LastUsedAt) >= touchInterval {
		if err := s.store.TouchAPIToken(ctx, rec.ID, now); err != nil {
			// Bookkeeping only: the request is still authenticated.
			s.log.Warn("could not record API token use", "token_name", rec.Name, "err", err)
		}
	}
	return nil
}

// CreateToken makes a new API token with the given name and returns its text,
// which is shown only this once. errkind.Conflict when an active token with
// that name exists.
func (s *Service) CreateToken(ctx context.Context, name string) (string, error) {
	token, rec, err := s.newToken(name)
	if err != nil {
		return "", err
	}
	if err := s.store.InsertAPIToken(ctx, rec); err != nil {
		return "", fmt.Errorf("create API token %q: %w", name, err)
	}
	s.log.Info("created API token", "token_name", name, "token_id", rec.ID)
	return token, nil
}

// EnsureAdminToken creates the admin token on first start and writes it to
// path (mode 0600, its directory 0700). When an admin token already exists
// it does nothing and returns created=false — even if the file is gone: the
// token cannot be recovered from its hash, so the operator rotates it with
// RotateAdminToken. When several replicas start at once, exactly one
// creates the token (and writes its file); the others return created=false.
func (s *Service) EnsureAdminToken(ctx context.Context, path string) (created bool, err error) {
	exists, err := s.store.APITokenNameExists(ctx, AdminName)
	if err != nil {
		return false, fmt.Errorf("check for the admin token: %w", err)
	}
	if exists {
		return false, nil
	}
	token, rec, err := s.newToken(AdminName)
	if err != nil {
		return false, err
	}
	// Write the file under a temporary name first: the token is stored only
	// if it can be handed over, and handed over only if it was stored.
	tmp, err := writeTemp(path, token)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp) // no-op after the rename
	if err := s.store.InsertAPIToken(ctx, rec); err != nil {
		if errkind.Is(err, errkind.Conflict) {
			// Another replica created it first.
			return false, nil
		}
		return false, fmt.Errorf("store the admin token: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		// Do not leave a token nobody can read: remove it so the next start
		// tries again.
		if derr := s.store.DeleteAPIToken(context.WithoutCancel(ctx), rec.ID); derr != nil {
			return false, fmt.Errorf("write the admin token to %s: %w (and removing it again failed: %v; run the admin token rotation)", path, err, derr)
		}
		return false, fmt.Errorf("write the admin token to %s: %w", path, err)
	}
	s.log.Info("created the admin token", "path", path)
	return true, nil
}

// RotateAdminToken revokes every admin token and writes a new one to path
// (mode 0600). It is how an operator recovers a lost or leaked admin token.
func (s *Service) RotateAdminToken(ctx context.Context, path string) error {
	token, rec, err := s.newToken(AdminName)
	if err != nil {
		return err
	}
	tmp, err := writeTemp(path, token)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := s.store.ReplaceAPIToken(ctx, rec); err != nil {
		return fmt.Errorf("rotate the admin token: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rotate the admin token: the old token is revoked but the new one could not be written to %s: %w; fix the directory and rotate again", path, err)
	}
	s.log.Info("rotated the admin token", "path", path)
	return nil
}

// Hash returns the stored form of a token: the hex SHA-256 of its text.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newToken makes a token text and its record.
func (s *Service) newToken(name string) (string, Record, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", Record{}, fmt.Errorf("generate token: %w", err)
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return "", Record{}, fmt.Errorf("generate token id: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	return token, Record{
		ID:        hex.EncodeToString(id),
		Name:      name,
		Hash:      Hash(token),
		CreatedAt: s.now().UTC(),
	}, nil
}

// tokenLen is the length of a token's text: the prefix and 43 base64url characters.
var tokenLen = len(TokenPrefix) + base64.RawURLEncoding.EncodedLen(32)

// wellFormed reports whether token has the form of an API token, so that
// garbage is rejected without a database lookup.
func wellFormed(token string) bool {
	if len(token) != tokenLen || !strings.HasPrefix(token, TokenPrefix) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(token[len(TokenPrefix):])
	return err == nil
}

// writeTemp writes token (with a newline) to a new 0600 file beside path and
// returns its name; path's directory is created with mode 0700.
func writeTemp(path, token string) (string, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create directory for the token file %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, ".admin-token-*")
	if err != nil {
		return "", fmt.Errorf("write the token file %s: %w", path, err)
	}
	// CreateTemp makes 0600 files; say so explicitly in case of an odd umask.
	err = errors.Join(f.Chmod(0o600), writeAll(f, token+"\n"), f.Sync(), f.Close())
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write the token file %s: %w", path, err)
	}
	return f.Name(), nil
}

func writeAll(f *os.File, s string) error {
	_, err := f.WriteString(s)
	return err
}
