package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/enroll"
	"github.com/ggfleet/ggfleet/broker/errkind"
)

func TestEnrollmentTokenLifecycle(t *testing.T) {
	ctx := context.Background()
	db := newTestDB(t)
	t0 := time.UnixMilli(1_700_000_000_000).UTC()
	lease := 5 * time.Minute
	rec := enroll.TokenRecord{Hash: "h1", CoreName: "core-1", ExpiresAt: t0.Add(time.Hour), CreatedAt: t0}
	if err := db.InsertEnrollmentToken(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertEnrollmentToken(ctx, rec); !errkind.Is(err, errkind.Conflict) {
		t.Errorf("duplicate insert: err = %v, want Conflict", err)
	}
	if _, err := db.EnrollmentToken(ctx, "nope"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("unknown hash: err = %v, want NotFound", err)
	}
	got, err := db.EnrollmentToken(ctx, "h1")
	if err != nil || got != rec {
		t.Fatalf("EnrollmentToken = %+v, %v; want %+v", got, err, rec)
	}

	claim := func(at time.Time) bool {
		t.Helper()
		won, err := db.ClaimEnrollmentToken(ctx, "h1", at, at.Add(-lease))
		if err != nil {
			t.Fatal(err)
		}
		return won
	}
	steps := []struct {
		name string
		do   func() bool
		want bool
	}{
		{"first claim wins", func() bool { return claim(t0) }, true},
		{"second claim within the lease loses", func() bool { return claim(t0.Add(time.Minute)) }, false},
		{"spend with someone else's claim fails", func() bool {
			ok, err := db.SpendEnrollmentToken(ctx, "h1", t0.Add(time.Second), t0.Add(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}, false},
		{"claim after release wins", func() bool {
			if err := db.ReleaseEnrollmentToken(ctx, "h1", t0); err != nil {
				t.Fatal(err)
			}
			return claim(t0.Add(2 * time.Minute))
		}, true},
		{"stale claim is taken over", func() bool { return claim(t0.Add(7 * time.Minute)) }, true},
		{"the taken-over claim cannot spend", func() bool {
			ok, err := db.SpendEnrollmentToken(ctx, "h1", t0.Add(2*time.Minute), t0.Add(8*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}, false},
		{"the current claim spends", func() bool {
			ok, err := db.SpendEnrollmentToken(ctx, "h1", t0.Add(7*time.Minute), t0.Add(8*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}, true},
		{"a spent token cannot be claimed, even after the lease", func() bool { return claim(t0.Add(30 * time.Minute)) }, false},
		{"a spent token is not released", func() bool {
			if err := db.ReleaseEnrollmentToken(ctx, "h1", t0.Add(7*time.Minute)); err != nil {
				t.Fatal(err)
			}
			got, err := db.EnrollmentToken(ctx, "h1")
			if err != nil {
				t.Fatal(err)
			}
			return got.UsedAt.Equal(t0.Add(8*time.Minute)) && got.ClaimedAt.Equal(t0.Add(7*time.Minute))
		}, true},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Fatalf("%s: got %v, want %v", s.name, got, s.want)
		}
	}

	t.Run("expired token cannot be claimed", func(t *testing.T) {
		rec := enroll.TokenRecord{Hash: "h2", CoreName: "core-1", ExpiresAt: t0.Add(time.Hour), CreatedAt: t0}
		if err := db.InsertEnrollmentToken(ctx, rec); err != nil {
			t.Fatal(err)
		}
		at := t0.Add(time.Hour)
		won, err := db.ClaimEnrollmentToken(ctx, "h2", at, at.Add(-lease))
		if err != nil || won {
			t.Errorf("claim at expiry = %v, %v; want false", won, err)
		}
	})
}
