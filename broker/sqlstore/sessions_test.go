package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/auth"
	"github.com/ggfleet/ggfleet/broker/errkind"
)

func TestDashboardSessions(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	t0 := time.UnixMilli(1_700_000_000_000).UTC()
	recs := []auth.SessionRecord{
		{Hash: "s1", TokenHash: "tok", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)},
		{Hash: "s2", TokenHash: "tok", CreatedAt: t0, ExpiresAt: t0.Add(2 * time.Hour)},
		{Hash: "s3", TokenHash: "other", CreatedAt: t0, ExpiresAt: t0.Add(3 * time.Hour)},
	}
	for _, r := range recs {
		if err := db.InsertSession(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.InsertSession(ctx, recs[0]); !errkind.Is(err, errkind.Conflict) {
		t.Errorf("inserting s1 again = %v, want Conflict", err)
	}
	got, err := db.SessionByHash(ctx, "s2")
	if err != nil || got != recs[1] {
		t.Errorf("SessionByHash(s2) = %+v, %v; want %+v", got, err, recs[1])
	}
	if _, err := db.SessionByHash(ctx, "nope"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("SessionByHash(nope) = %v, want NotFound", err)
	}

	// Expired at or before the time given: s1 (exactly at) and s2.
	n, err := db.DeleteExpiredSessions(ctx, t0.Add(2*time.Hour))
	if err != nil || n != 2 {
		t.Errorf("DeleteExpiredSessions = %d, %v; want 2", n, err)
	}
	for _, h := range []string{"s1", "s2"} {
		if _, err := db.SessionByHash(ctx, h); !errkind.Is(err, errkind.NotFound) {
			t.Errorf("%s after the purge: %v, want NotFound", h, err)
		}
	}
	if err := db.DeleteSession(ctx, "s3"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SessionByHash(ctx, "s3"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("s3 after DeleteSession: %v, want NotFound", err)
	}
	if err := db.DeleteSession(ctx, "s3"); err != nil {
		t.Errorf("deleting a missing session = %v, want nil", err)
	}
}
