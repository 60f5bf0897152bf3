package auth_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/auth"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
)

func readToken(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestEnsureAdminTokenStoresOnlyTheHash(t *testing.T) {
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	svc := auth.New(auth.Config{Store: db})
	path := filepath.Join(t.TempDir(), "data", "admin.token")

	created, err := svc.EnsureAdminToken(ctx, path)
	if err != nil || !created {
		t.Fatalf("EnsureAdminToken = %v, %v; want true, nil", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode = %v, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode = %v, want 0700", di.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only admin.token (no temporary files)", len(entries))
	}

	token := readToken(t, path)
	if !strings.HasPrefix(token, auth.TokenPrefix) || len(token) != len(auth.TokenPrefix)+43 {
		t.Fatalf("token %q does not have the form ggf_<43 base64url characters>", token)
	}
	rows, err := db.SQL().QueryContext(ctx, `SELECT name, hash FROM api_tokens`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var n int
	for rows.Next() {
		var name, hash string
		if err := rows.Scan(&name, &hash); err != nil {
			t.Fatal(err)
		}
		n++
		sum := sha256.Sum256([]byte(token))
		if name != auth.AdminName || hash != hex.EncodeToString(sum[:]) {
			t.Errorf("row = (%q, %q), want (admin, sha256 of the token)", name, hash)
		}
		if strings.Contains(hash, token[len(auth.TokenPrefix):]) {
			t.Errorf("stored hash contains the token")
		}
	}
	if n != 1 {
		t.Errorf("api_tokens has %d rows, want 1", n)
	}
	if err := svc.Authenticate(ctx, token); err != nil {
		t.Errorf("Authenticate(admin token) = %v", err)
	}
}

func TestEnsureAdminTokenIsIdempotent(t *testing.T) {
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	svc := auth.New(auth.Config{Store: db})
	path := filepath.Join(t.TempDir(), "admin.token")
	if _, err := svc.EnsureAdminToken(ctx, path); err != nil {
		t.Fatal(err)
	}
	first := readToken(t, path)

	t.Run("second start keeps the token", func(t *testing.T) {
		created, err := svc.EnsureAdminToken(ctx, path)
		if err != nil || created {
			t.Fatalf("EnsureAdminToken = %v, %v; want false, nil", created, err)
		}
		if got := readToken(t, path); got != first {
			t.Errorf("admin.token changed on the second start")
		}
	})
	t.Run("missing file is not silently re-created", func(t *testing.T) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		created, err := svc.EnsureAdminToken(ctx, path)
		if err != nil || created {
			t.Fatalf("EnsureAdminToken = %v, %v; want false, nil", created, err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("admin.token was re-created: %v", err)
		}
		if err := svc.Authenticate(ctx, first); err != nil {
			t.Errorf("the original admin token stopped working: %v", err)
		}
	})
	t.Run("rotation revokes the old token and writes a new one", func(t *testing.T) {
		if err := svc.RotateAdminToken(ctx, path); err != nil {
			t.Fatal(err)
		}
		second := readToken(t, path)
		if second == first {
			t.Fatal("rotation wrote the same token")
		}
		if err := svc.Authenticate(ctx, first); !errkind.Is(err, errkind.Unauthorized) {
			t.Errorf("Authenticate(old token) = %v, want Unauthorized", err)
		}
		if err := svc.Authenticate(ctx, second); err != nil {
			t.Errorf("Authenticate(new token) = %v", err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("rotated admin.token mode = %v, want 0600", fi.Mode().Perm())
		}
		created, err := svc.EnsureAdminToken(ctx, path)
		if err != nil || created {
			t.Errorf("EnsureAdminToken after rotation = %v, %v; want false, nil", created, err)
		}
	})
}

func TestEnsureAdminTokenRace(t *testing.T) {
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []string
	)
	for _, dir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := filepath.Join(dir, "admin.token")
			created, err := auth.New(auth.Config{Store: db}).EnsureAdminToken(ctx, path)
			if err != nil {
				t.Errorf("EnsureAdminToken: %v", err)
				return
			}
			_, statErr := os.Stat(path)
			if created != (statErr == nil) {
				t.Errorf("created = %v but file exists = %v", created, statErr == nil)
			}
			if created {
				mu.Lock()
				winners = append(winners, path)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d replicas created the admin token, want exactly 1", len(winners))
	}
	if err := auth.New(auth.Config{Store: db}).Authenticate(ctx, readToken(t, winners[0])); err != nil {
		t.Errorf("the winner's token does not authenticate: %v", err)
	}
}

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	now := time.UnixMilli(1_700_000_000_000).UTC()
	svc := auth.New(auth.Config{Store: db, Now: func() time.Time { return now }})
	good, err := svc.CreateToken(ctx, "ci")
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := svc.CreateToken(ctx, auth.AdminName)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.RotateAdminToken(ctx, filepath.Join(t.TempDir(), "admin.token")); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateToken(ctx, "ci"); !errkind.Is(err, errkind.Conflict) {
		t.Errorf("second active token named ci: err = %v, want Conflict", err)
	}

	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", good, true},
		{"revoked", revoked, false},
		{"empty", "", false},
		{"garbage", "hello", false},
		{"right form, unknown", auth.TokenPrefix + strings.Repeat("A", 43), false},
		{"valid with a changed character", good[:len(good)-1] + flip(good[len(good)-1]), false},
		{"valid with a suffix", good + "x", false},
		{"the stored hash itself", auth.Hash(good), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := svc.Authenticate(ctx, tt.token)
			if tt.ok && err != nil {
				t.Errorf("Authenticate = %v, want nil", err)
			}
			if !tt.ok && !errkind.Is(err, errkind.Unauthorized) {
				t.Errorf("Authenticate = %v, want Unauthorized", err)
			}
		})
	}

	var lastUsed int64
	if err := db.SQL().QueryRowContext(ctx, `SELECT last_used_at FROM api_tokens WHERE name = 'ci'`).Scan(&lastUsed); err != nil {
		t.Fatal(err)
	}
	if lastUsed != now.UnixMilli() {
		t.Errorf("last_used_at = %d, want %d", lastUsed, now.UnixMilli())
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}
