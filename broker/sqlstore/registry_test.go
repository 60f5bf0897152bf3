package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/broker/provider/local"
)

// The registry store is what the local provider persists through.
var _ local.Store = (*RegistryStore)(nil)

func newRegistryTestStore(t *testing.T) (*DB, *RegistryStore) {
	t.Helper()
	db := newTestDB(t)
	return db, db.Registry()
}

// registryRows counts the rows of a table matching a condition.
func registryRows(t *testing.T, db *DB, table, where string, args ...any) int {
	t.Helper()
	var n int
	if err := db.sql.QueryRow(db.q(`SELECT COUNT(*) FROM `+table+` WHERE `+where), args...).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func TestRegistryStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	_, s := newRegistryTestStore(t)
	at := time.UnixMilli(1_700_000_000_123).UTC()

	if err := s.CreateThing(ctx, provider.Thing{Name: "t1", ThingType: "tt", Attributes: map[string]string{"k": "v"}, CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	err := s.CreateThing(ctx, provider.Thing{Name: "t1", CreatedAt: at})
	if !errkind.Is(err, errkind.Conflict) {
		t.Fatalf("duplicate CreateThing: %v, want Conflict", err)
	}
	th, err := s.GetThing(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if th.ThingType != "tt" || th.Attributes["k"] != "v" || !th.CreatedAt.Equal(at) {
		t.Fatalf("GetThing = %+v", th)
	}
	if th.Groups == nil || th.Principals == nil || th.Policies == nil {
		t.Fatalf("GetThing lists must be empty, not nil: %+v", th)
	}

	c := provider.Certificate{ID: "c1", PEM: "pem", CAID: "ca", Status: "ACTIVE", CreatedAt: at}
	if err := s.PutCertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCertificate(ctx, provider.Certificate{ID: "c1", PEM: "other", Status: "INACTIVE", CreatedAt: at}); err != nil {
		t.Fatalf("PutCertificate again: %v", err)
	}
	got, err := s.GetCertificate(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got != c {
		t.Fatalf("GetCertificate = %+v, want the first registration %+v", got, c)
	}

	created, err := s.PutPolicy(ctx, provider.Policy{Name: "p", Document: "{}"}, at)
	if err != nil || !created {
		t.Fatalf("PutPolicy new = %v, %v; want created", created, err)
	}
	created, err = s.PutPolicy(ctx, provider.Policy{Name: "p", Document: `{"a":1}`}, at)
	if err != nil || created {
		t.Fatalf("PutPolicy replace = %v, %v; want replaced", created, err)
	}
	pol, err := s.GetPolicy(ctx, "p")
	if err != nil || pol.Document != `{"a":1}` {
		t.Fatalf("GetPolicy = %+v, %v", pol, err)
	}

	if err := s.MarkCoreRegistered(ctx, "core", at); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateCoreStatus(ctx, provider.CoreDevice{Name: "core", Status: "HEALTHY", LastStatus: at.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	cd, err := s.GetCoreDevice(ctx, "core")
	if err != nil || cd.Status != "HEALTHY" || !cd.LastStatus.Equal(at.Add(time.Second)) {
		t.Fatalf("GetCoreDevice = %+v, %v", cd, err)
	}
}

func TestRegistryStoreDeleteCascades(t *testing.T) {
	ctx := context.Background()
	db, s := newRegistryTestStore(t)
	now := time.Now()
	for _, n := range []string{"core", "dev"} {
		if err := s.CreateThing(ctx, provider.Thing{Name: n, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []error{
		s.PutCertificate(ctx, provider.Certificate{ID: "c-dev", PEM: "x", Status: "ACTIVE", CreatedAt: now}),
		s.AttachThingPrincipal(ctx, "dev", "c-dev"),
		s.CreateThingGroup(ctx, "g", "", now),
		s.AddThingToGroup(ctx, "dev", "g"),
		s.MarkCoreRegistered(ctx, "core", now),
		s.AssociateClientDevice(ctx, "core", "dev", now),
	}
	_, err := s.PutPolicy(ctx, provider.Policy{Name: "p", Document: "{}"}, now)
	steps = append(steps, err, s.AttachPolicy(ctx, "p", "c-dev"))
	for i, err := range steps {
		if err != nil {
			t.Fatalf("setup step %d: %v", i, err)
		}
	}

	if err := s.DeleteThing(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ table, where, arg string }{
		{"registry_things", "name = ?", "dev"},
		{"registry_group_members", "thing_name = ?", "dev"},
		{"registry_thing_principals", "thing_name = ?", "dev"},
		{"registry_certificates", "id = ?", "c-dev"},
		{"registry_policy_attachments", "cert_id = ?", "c-dev"},
		{"registry_client_devices", "device_name = ?", "dev"},
	} {
		if n := registryRows(t, db, c.table, c.where, c.arg); n != 0 {
			t.Errorf("%s still has %d rows for %s after DeleteThing", c.table, n, c.arg)
		}
	}
	if n := registryRows(t, db, "registry_policies", "name = ?", "p"); n != 1 {
		t.Errorf("the policy itself was deleted with the thing")
	}

	if err := s.AssociateClientDevice(ctx, "core", "other", now); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteCoreDevice(ctx, "core"); err != nil {
		t.Fatal(err)
	}
	if n := registryRows(t, db, "registry_client_devices", "core_name = ?", "core"); n != 0 {
		t.Errorf("DeleteCoreDevice left %d associations", n)
	}
	if _, err := s.GetCoreDevice(ctx, "core"); !errkind.Is(err, errkind.NotFound) {
		t.Errorf("GetCoreDevice after delete: %v, want NotFound", err)
	}
}

// TestGetThingPolicies checks a thing's policies are those of all its
// principals, each once, in name order.
func TestGetThingPolicies(t *testing.T) {
	ctx := context.Background()
	_, s := newRegistryTestStore(t)
	at := time.UnixMilli(1_700_000_000_123).UTC()
	if err := s.CreateThing(ctx, provider.Thing{Name: "t", CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	attach := map[string][]string{"c1": {"pol-b", "pol-a"}, "c2": {"pol-c", "pol-b"}}
	for cert, policies := range attach {
		if err := s.PutCertificate(ctx, provider.Certificate{ID: cert, PEM: "pem", Status: "ACTIVE", CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		if err := s.AttachThingPrincipal(ctx, "t", cert); err != nil {
			t.Fatal(err)
		}
		for _, p := range policies {
			if _, err := s.PutPolicy(ctx, provider.Policy{Name: p, Document: "{}"}, at); err != nil {
				t.Fatal(err)
			}
			if err := s.AttachPolicy(ctx, p, cert); err != nil {
				t.Fatal(err)
			}
		}
	}
	th, err := s.GetThing(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(th.Policies); got != "[pol-a pol-b pol-c]" {
		t.Fatalf("policies = %s, want [pol-a pol-b pol-c]", got)
	}
}
