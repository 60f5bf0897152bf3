package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// Dashboard sessions. The dashboard cannot keep an API token in the
// browser (no secrets in local storage, and EventSource cannot send an
// Authorization header), so it exchanges the token once for a session: an
// opaque, random id the browser keeps in an HttpOnly cookie. Only the
// SHA-256 of the id is stored, with its expiry and the hash of the token it
// was made from, so a leaked database yields no usable session, every
// replica sharing the database accepts it, logout really ends it, and
// revoking the token ends its sessions too.

// SessionPrefix starts every session id, so ids are recognisable in logs
// and secret scanners (they never appear in logs on purpose).
const SessionPrefix = "ggs_"

// DefaultSessionTTL is how long a dashboard session lasts when
// Config.SessionTTL is zero: a working day, after which the operator logs in
// again.
const DefaultSessionTTL = 12 * time.Hour

// SessionRecord is a dashboard session as stored: never the id, only its hash.
type SessionRecord struct {
	Hash      string // hex SHA-256 of the session id
	TokenHash string // hex SHA-256 of the API token the session was made from
	CreatedAt time.Time
	ExpiresAt time.Time
}

// SessionStore persists dashboard sessions (broker/sqlstore implements it).
type SessionStore interface {
	// InsertSession stores a new session.
	InsertSession(ctx context.Context, rec SessionRecord) error
	// SessionByHash returns the session with this hash, or errkind.NotFound.
	SessionByHash(ctx context.Context, hash string) (SessionRecord, error)
	// DeleteSession removes a session; a missing one is not an error.
	DeleteSession(ctx context.Context, hash string) error
	// DeleteExpiredSessions removes every session that expired at or before
	// t and returns how many it removed.
	DeleteExpiredSessions(ctx context.Context, t time.Time) (int, error)
}

// Session is a newly created dashboard session: the id to hand to the
// browser (shown only this once) and when it ends.
type Session struct {
	ID        string
	ExpiresAt time.Time
}

// Login exchanges a valid API token for a new dashboard session. A bad token
// is an errkind.Unauthorized error; a broker without a session store answers
// errkind.Unavailable.
func (s *Service) Login(ctx context.Context, token string) (Session, error) {
	if s.sessions == nil {
		return Session{}, errkind.New(errkind.Unavailable, "dashboard sessions are not available on this broker")
	}
	if err := s.Authenticate(ctx, token); err != nil {
		return Session{}, err
	}
	now := s.now().UTC()
	// Housekeeping on the rare path (a login), so that no background loop
	// is needed: expired sessions are refused anyway.
	if n, err := s.sessions.DeleteExpiredSessions(ctx, now); err != nil {
		s.log.Warn("could not delete expired dashboard sessions", "err", err)
	} else if n > 0 {
		s.log.Debug("deleted expired dashboard sessions", "count", n)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return Session{}, fmt.Errorf("generate session id: %w", err)
	}
	id := SessionPrefix + base64.RawURLEncoding.EncodeToString(secret)
	rec := SessionRecord{Hash: Hash(id), TokenHash: Hash(token), CreatedAt: now, ExpiresAt: now.Add(s.sessionTTL)}
	if err := s.sessions.InsertSession(ctx, rec); err != nil {
		return Session{}, fmt.Errorf("store dashboard session: %w", err)
	}
	s.log.Info("dashboard login", "expiresAt", rec.ExpiresAt)
	return Session{ID: id, ExpiresAt: rec.ExpiresAt}, nil
}

// AuthenticateSession returns nil when id is a live dashboard session whose
// API token is still valid, and an errkind.Unauthorized error otherwise.
// Expired sessions and sessions of revoked tokens are deleted on sight.
func (s *Service) AuthenticateSession(ctx context.Context, id string) error {
	if s.sessions == nil || !wellFormedSession(id) {
		return errkind.New(errkind.Unauthorized, "invalid session")
	}
	hash := Hash(id)
	rec, err := s.sessions.SessionByHash(ctx, hash)
	if errkind.Is(err, errkind.NotFound) {
		return errkind.New(errkind.Unauthorized, "invalid session")
	}
	if err != nil {
		return fmt.Errorf("look up dashboard session: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(hash)) != 1 {
		return errkind.New(errkind.Unauthorized, "invalid session")
	}
	if !s.now().Before(rec.ExpiresAt) {
		s.dropSession(ctx, hash)
		return errkind.New(errkind.Unauthorized, "the session has expired: log in again")
	}
	tok, err := s.store.APITokenByHash(ctx, rec.TokenHash)
	if errkind.Is(err, errkind.NotFound) || (err == nil && tok.Revoked) {
		s.dropSession(ctx, hash)
		return errkind.New(errkind.Unauthorized, "the session's token has been revoked: log in again")
	}
	if err != nil {
		return fmt.Errorf("look up the session's API token: %w", err)
	}
	return nil
}

// Logout ends a dashboard session. Unknown or malformed ids are not an
// error: the browser's cookie is cleared either way.
func (s *Service) Logout(ctx context.Context, id string) error {
	if s.sessions == nil || !wellFormedSession(id) {
		return nil
	}
	if err := s.sessions.DeleteSession(ctx, Hash(id)); err != nil {
		return fmt.Errorf("delete dashboard session: %w", err)
	}
	s.log.Info("dashboard logout")
	return nil
}

// dropSession deletes a session that can no longer be used; failing to is
// only logged, since the session is refused either way.
func (s *Service) dropSession(ctx context.Context, hash string) {
	if err := s.sessions.DeleteSession(ctx, hash); err != nil {
		s.log.Warn("could not delete a dead dashboard session", "err", err)
	}
}

// sessionLen is the length of a session id: the prefix and 43 base64url characters.
var sessionLen = len(SessionPrefix) + base64.RawURLEncoding.EncodedLen(32)

// wellFormedSession reports whether id has the form of a session id, so that
// garbage cookies are refused without a database lookup.
func wellFormedSession(id string) bool {
	if len(id) != sessionLen || !strings.HasPrefix(id, SessionPrefix) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(id[len(SessionPrefix):])
	return err == nil
}
