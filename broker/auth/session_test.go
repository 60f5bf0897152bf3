package auth_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/auth"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// sessionSetup returns a service with a session store, its clock, the
// admin token and the token file's path.
func sessionSetup(t *testing.T, ttl time.Duration) (*auth.Service, *clock, string, string) {
	t.Helper()
	db := sqlstoretest.Open(t)
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	svc := auth.New(auth.Config{Store: db, Sessions: db, SessionTTL: ttl, Now: clk.now})
	path := filepath.Join(t.TempDir(), "admin.token")
	if _, err := svc.EnsureAdminToken(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	return svc, clk, readToken(t, path), path
}

func TestLoginMakesASessionStoredOnlyHashed(t *testing.T) {
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	svc := auth.New(auth.Config{Store: db, Sessions: db})
	path := filepath.Join(t.TempDir(), "admin.token")
	if _, err := svc.EnsureAdminToken(ctx, path); err != nil {
		t.Fatal(err)
	}
	s, err := svc.Login(ctx, readToken(t, path))
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	if !strings.HasPrefix(s.ID, auth.SessionPrefix) || len(s.ID) != len(auth.SessionPrefix)+43 {
		t.Errorf("session id %q: want %s and 43 base64url characters", s.ID, auth.SessionPrefix)
	}
	if d := time.Until(s.ExpiresAt); d < auth.DefaultSessionTTL-time.Minute || d > auth.DefaultSessionTTL {
		t.Errorf("expires in %v, want about %v", d, auth.DefaultSessionTTL)
	}
	if err := svc.AuthenticateSession(ctx, s.ID); err != nil {
		t.Errorf("AuthenticateSession(new session) = %v", err)
	}
	var hash, tokenHash string
	if err := db.SQL().QueryRowContext(ctx, `SELECT hash, token_hash FROM ui_sessions`).Scan(&hash, &tokenHash); err != nil {
		t.Fatal(err)
	}
	if hash != auth.Hash(s.ID) || strings.Contains(hash+tokenHash, s.ID) || strings.Contains(hash+tokenHash, readToken(t, path)) {
		t.Errorf("stored %q/%q: want only hashes", hash, tokenHash)
	}
	other, err := svc.Login(ctx, readToken(t, path))
	if err != nil || other.ID == s.ID {
		t.Errorf("second Login = %q, %v; want a different session", other.ID, err)
	}
}

func TestLoginRefusesBadTokens(t *testing.T) {
	svc, _, _, _ := sessionSetup(t, 0)
	for _, tok := range []string{"", "ggf_short", "ggf_" + strings.Repeat("A", 43), "Bearer x"} {
		if _, err := svc.Login(context.Background(), tok); !errkind.Is(err, errkind.Unauthorized) {
			t.Errorf("Login(%q) = %v, want Unauthorized", tok, err)
		}
	}
}

func TestSessionChecks(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		change func(t *testing.T, svc *auth.Service, clk *clock, id, path string)
		want   string // "" = accepted, else part of the Unauthorized message
	}{
		{"live", func(*testing.T, *auth.Service, *clock, string, string) {}, ""},
		{"just before expiry", func(_ *testing.T, _ *auth.Service, clk *clock, _, _ string) {
			clk.t = clk.t.Add(time.Hour - time.Second)
		}, ""},
		{"expired", func(_ *testing.T, _ *auth.Service, clk *clock, _, _ string) { clk.t = clk.t.Add(time.Hour) }, "expired"},
		{"logged out", func(t *testing.T, svc *auth.Service, _ *clock, id, _ string) {
			if err := svc.Logout(ctx, id); err != nil {
				t.Fatal(err)
			}
		}, "invalid session"},
		{"token revoked", func(t *testing.T, svc *auth.Service, _ *clock, _, path string) {
			if err := svc.RotateAdminToken(ctx, path); err != nil {
				t.Fatal(err)
			}
		}, "revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, clk, token, path := sessionSetup(t, time.Hour)
			s, err := svc.Login(ctx, token)
			if err != nil {
				t.Fatal(err)
			}
			tt.change(t, svc, clk, s.ID, path)
			err = svc.AuthenticateSession(ctx, s.ID)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("AuthenticateSession = %v, want nil", err)
				}
				return
			}
			if !errkind.Is(err, errkind.Unauthorized) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("AuthenticateSession = %v, want Unauthorized with %q", err, tt.want)
			}
			// A refused session stays refused (it was deleted, or stays invalid).
			if err := svc.AuthenticateSession(ctx, s.ID); !errkind.Is(err, errkind.Unauthorized) {
				t.Fatalf("second AuthenticateSession = %v, want Unauthorized", err)
			}
		})
	}
}

func TestMalformedSessionIDs(t *testing.T) {
	svc, _, token, _ := sessionSetup(t, 0)
	for _, id := range []string{"", "ggs_", "ggs_" + strings.Repeat("!", 43), token, "ggs_" + strings.Repeat("A", 44)} {
		if err := svc.AuthenticateSession(context.Background(), id); !errkind.Is(err, errkind.Unauthorized) {
			t.Errorf("AuthenticateSession(%q) = %v, want Unauthorized", id, err)
		}
		if err := svc.Logout(context.Background(), id); err != nil {
			t.Errorf("Logout(%q) = %v, want nil", id, err)
		}
	}
}

func TestLoginPurgesExpiredSessions(t *testing.T) {
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	svc := auth.New(auth.Config{Store: db, Sessions: db, SessionTTL: time.Minute, Now: clk.now})
	token, err := svc.CreateToken(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := svc.Login(ctx, token); err != nil {
			t.Fatal(err)
		}
	}
	clk.t = clk.t.Add(2 * time.Minute)
	if _, err := svc.Login(ctx, token); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM ui_sessions`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d sessions stored after a login past the others' expiry, want 1", n)
	}
}

func TestLoginWithoutSessionStore(t *testing.T) {
	db := sqlstoretest.Open(t)
	svc := auth.New(auth.Config{Store: db})
	token, err := svc.CreateToken(context.Background(), "ops")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Login(context.Background(), token); !errkind.Is(err, errkind.Unavailable) {
		t.Errorf("Login without a session store = %v, want Unavailable", err)
	}
}
