package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/auth"
	"github.com/ggfleet/ggfleet/broker/errkind"
)

func TestAPITokens(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	t0 := time.UnixMilli(1_700_000_000_000).UTC()
	admin := auth.Record{ID: "id1", Name: "admin", Hash: "hash1", CreatedAt: t0}
	if err := db.InsertAPIToken(ctx, admin); err != nil {
		t.Fatal(err)
	}

	t.Run("second active token with the same name conflicts", func(t *testing.T) {
		err := db.InsertAPIToken(ctx, auth.Record{ID: "id2", Name: "admin", Hash: "hash2", CreatedAt: t0})
		if !errkind.Is(err, errkind.Conflict) {
			t.Errorf("err = %v, want Conflict", err)
		}
	})
	t.Run("same hash conflicts", func(t *testing.T) {
		err := db.InsertAPIToken(ctx, auth.Record{ID: "id3", Name: "other", Hash: "hash1", CreatedAt: t0})
		if !errkind.Is(err, errkind.Conflict) {
			t.Errorf("err = %v, want Conflict", err)
		}
	})
	t.Run("lookup and touch", func(t *testing.T) {
		if err := db.TouchAPIToken(ctx, "id1", t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		got, err := db.APITokenByHash(ctx, "hash1")
		want := admin
		want.LastUsedAt = t0.Add(time.Minute)
		if err != nil || got != want {
			t.Errorf("APITokenByHash = %+v, %v; want %+v", got, err, want)
		}
		if _, err := db.APITokenByHash(ctx, "HASH1"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("lookup is not exact: err = %v, want NotFound", err)
		}
	})
	t.Run("replace revokes the old token", func(t *testing.T) {
		if err := db.ReplaceAPIToken(ctx, auth.Record{ID: "id4", Name: "admin", Hash: "hash4", CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		old, err := db.APITokenByHash(ctx, "hash1")
		if err != nil || !old.Revoked {
			t.Errorf("old token = %+v, %v; want revoked", old, err)
		}
		cur, err := db.APITokenByHash(ctx, "hash4")
		if err != nil || cur.Revoked {
			t.Errorf("new token = %+v, %v; want active", cur, err)
		}
	})
	t.Run("name exists counts revoked tokens; delete removes", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			want bool
		}{{"admin", true}, {"nobody", false}} {
			got, err := db.APITokenNameExists(ctx, tt.name)
			if err != nil || got != tt.want {
				t.Errorf("APITokenNameExists(%q) = %v, %v; want %v", tt.name, got, err, tt.want)
			}
		}
		if err := db.DeleteAPIToken(ctx, "id4"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.APITokenByHash(ctx, "hash4"); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("deleted token: err = %v, want NotFound", err)
		}
	})
}
