package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/ca"
)

// Revoked certificates are kept once each, oldest first.
func TestRevokedCertificates(t *testing.T) {
	ctx := context.Background()
	d := newTestDB(t)
	t0 := time.UnixMilli(1_800_000_000_000).UTC()
	a := ca.Revoked{CertID: "aa", CAID: "ca1", CertificatePem: "PEM-A", RevokedAt: t0.Add(time.Second)}
	b := ca.Revoked{CertID: "bb", CertificatePem: "PEM-B", RevokedAt: t0}
	for _, r := range []ca.Revoked{a, b, a} {
		if err := d.AddRevoked(ctx, r); err != nil {
			t.Fatalf("AddRevoked(%s): %v", r.CertID, err)
		}
	}
	got, err := d.ListRevoked(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != b || got[1] != a {
		t.Fatalf("ListRevoked = %+v, want [%+v %+v]", got, b, a)
	}
}
